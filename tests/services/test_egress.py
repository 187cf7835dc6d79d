"""The SSRF guard: which URLs the service may send to."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trustme
import urllib3
from urllib3.util import connection

from audiences.errors import InvalidParameter
from audiences.services import egress
from audiences.services.egress import PinnedClient, check_resolved, checked_url
from tests.api.test_syncs import FileServer, Served

Resolver = Callable[..., list[Any]]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[::127.0.0.1]/hook",
        "http://[::a00:1]/hook",
        "http://[64:ff9b::7f00:1]/hook",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[2002:7f00:1::]/hook",
        "http://[2002:c0a8:1::1]/",
        "http://10.1.2.3/",
        "http://192.168.0.7/",
        "http://172.16.0.1/",
        "http://169.254.169.254/latest/meta-data",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://localhost:9000/",
        "http://localhost./",
        "http://127.0.0.1./",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://0x7f.1/",
        "http://127\u30020\u30020\u30021/",
        "http://0x7f\u30021/",
        "http://LOCALHOST./",
        "http://db.internal/",
        "http://db.internal./",
        "ftp://example.com/file",
        "file:///etc/passwd",
        "https://user:secret@example.com/",
        "https:///no-host",
        "http://example.com:99999/",
        "https://example.com/" + "a" * 2100,
    ],
)
def test_refused_urls_name_the_code(url: str) -> None:
    with pytest.raises(InvalidParameter) as caught:
        checked_url(url, allow_private=False)
    assert caught.value.code == "url_not_allowed"


@pytest.mark.parametrize(
    "url", ["https://example.com/hook", "http://93.184.216.34:8080/x", "https://example.com./x"]
)
def test_public_urls_pass_unchanged(url: str) -> None:
    assert checked_url(url, allow_private=False) == url


def test_the_operator_may_allow_private_receivers() -> None:
    url = "http://127.0.0.1:8080/hook"
    assert checked_url(url, allow_private=True) == url
    with pytest.raises(InvalidParameter):
        checked_url("ftp://127.0.0.1/", allow_private=True)


def test_a_name_that_resolves_to_loopback_is_refused_before_connecting() -> None:
    with pytest.raises(InvalidParameter) as caught:
        check_resolved("localhost", 80)
    assert "loopback" in str(caught.value)


def test_public_addresses_carried_in_ipv6_pass() -> None:
    for url in ("http://[64:ff9b::5db8:d822]/", "http://[2002:5db8:d822::1]/"):
        assert checked_url(url, allow_private=False) == url


@pytest.fixture
def server() -> Iterator[FileServer]:
    """A loopback HTTP server that records the ``Host`` each request named."""
    running = FileServer()
    yield running
    running.close()


@pytest.fixture
def tls_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FileServer, list[str | None]]]:
    """The loopback server over TLS with a certificate for ``files.test`` only, from a test
    authority the pinned client is made to trust, keeping connections alive (HTTP/1.1);
    and the SNI name of each handshake."""
    authority = trustme.CA()
    names: list[str | None] = []
    serving = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("files.test").configure_cert(serving)
    serving.sni_callback = lambda _socket, name, _context: names.append(name)  # type: ignore[assignment,func-returns-value]
    trusting = ssl.create_default_context()
    authority.configure_trust(trusting)
    monkeypatch.setattr(egress, "_tls", lambda: trusting)
    running = FileServer()
    running.server.socket = serving.wrap_socket(running.server.socket, server_side=True)
    running.server.RequestHandlerClass.protocol_version = "HTTP/1.1"  # type: ignore[attr-defined]
    yield running, names
    running.close()


class Dns:
    """A resolver at the ``socket.getaddrinfo`` level: each test name answers the addresses
    queued for it, one list per lookup (the last one again once the queue is spent), and the
    connections made are recorded; a connection to anything but loopback is refused here, so
    no packet leaves the machine."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.answers: dict[str, list[list[str]]] = {}
        self.lookups: list[str] = []
        self.connected: list[str] = []
        real_lookup, real_connect = socket.getaddrinfo, connection.create_connection

        def lookup(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
            if host not in self.answers:
                return real_lookup(host, port, *args, **kwargs)
            self.lookups.append(host)
            queue = self.answers[host]
            addresses = queue.pop(0) if len(queue) > 1 else queue[0]
            return [
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))
                for address in addresses
            ]

        def connect(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
            host, port = address
            if host in self.answers:  # a connection that resolves again (not pinned)
                host = lookup(host, port)[0][4][0]
            self.connected.append(host)
            if not host.startswith("127."):
                raise ConnectionRefusedError(f"the test refuses {host}")
            return real_connect((host, port), *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", lookup)
        monkeypatch.setattr(connection, "create_connection", connect)  # urllib3's connect


def test_a_name_rebound_between_check_and_connect_never_reaches_loopback(
    server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    dns = Dns(monkeypatch)
    dns.answers["rebind.test"] = [["93.184.216.34"], ["127.0.0.1"]]  # public first, then not
    server.files["/secret"] = Served(body=b"internal")
    port = server.server.server_address[1]
    with (
        PinnedClient(allow_private=False, timeout=5) as client,
        pytest.raises(urllib3.exceptions.NewConnectionError, match="the test refuses"),
    ):
        client.request("GET", f"http://rebind.test:{port}/secret")
    assert dns.lookups == ["rebind.test"]  # resolved once, connected to what was checked
    assert dns.connected == ["93.184.216.34"]
    assert server.requests == []


def test_a_name_that_resolves_to_loopback_as_it_connects_is_refused(
    server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    dns = Dns(monkeypatch)
    dns.answers["inside.test"] = [["127.0.0.1"]]
    port = server.server.server_address[1]
    with (
        PinnedClient(allow_private=False, timeout=5) as client,
        pytest.raises(InvalidParameter) as refused,
    ):
        client.request("GET", f"http://inside.test:{port}/x")
    assert refused.value.code == "url_not_allowed"
    assert dns.connected == [] and server.requests == []


def test_the_pinned_address_is_reached_with_the_name_as_host(
    server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    dns = Dns(monkeypatch)
    dns.answers["files.test"] = [["127.0.0.1"]]
    server.files["/list.csv"] = Served(body=b"id\na\n")
    port = server.server.server_address[1]
    with PinnedClient(allow_private=True, timeout=5) as client:
        answer = client.request("GET", f"http://files.test:{port}/list.csv")
        assert (answer.status, answer.read()) == (200, b"id\na\n")
    assert server.hosts == [f"files.test:{port}"]
    assert dns.connected == ["127.0.0.1"]


def test_a_name_private_at_its_lookup_is_refused_though_it_would_turn_public(
    server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pin works both ways: the one lookup decides, and no second one is asked for."""
    dns = Dns(monkeypatch)
    dns.answers["turns.test"] = [["127.0.0.1"], ["93.184.216.34"]]
    port = server.server.server_address[1]
    with (
        PinnedClient(allow_private=False, timeout=5) as client,
        pytest.raises(InvalidParameter) as refused,
    ):
        client.request("GET", f"http://turns.test:{port}/x")
    assert refused.value.code == "url_not_allowed"
    assert dns.lookups == ["turns.test"]
    assert dns.connected == [] and server.requests == []


def test_tls_to_the_pinned_address_names_and_checks_the_host(
    tls_server: tuple[FileServer, list[str | None]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SNI and the certificate check use the name, not the address connected to; and a
    connection checked for one name is not reused for another name on the same address."""
    server, sni = tls_server
    dns = Dns(monkeypatch)
    dns.answers["files.test"] = [["127.0.0.1"]]
    dns.answers["other.test"] = [["127.0.0.1"]]
    server.files["/list.csv"] = Served(body=b"id\na\n")
    port = server.server.server_address[1]
    with PinnedClient(allow_private=True, timeout=5) as client:
        answers = []
        for _ in range(2):
            answer = client.request("GET", f"https://files.test:{port}/list.csv")
            answers.append((answer.status, answer.read()))
            client.done(answer)
        with pytest.raises(urllib3.exceptions.SSLError, match="certificate"):
            client.request("GET", f"https://other.test:{port}/list.csv")
    assert answers == [(200, b"id\na\n")] * 2
    assert server.hosts == [f"files.test:{port}"] * 2
    assert sni == ["files.test", "other.test"]  # one handshake per name, the second refused
    assert dns.connected == ["127.0.0.1", "127.0.0.1"]


def test_a_private_address_in_the_url_is_refused_as_it_is_sent(server: FileServer) -> None:
    # An address written in the URL is checked without a lookup: still never reached.
    port = server.server.server_address[1]
    for host in ("127.0.0.1", "[::ffff:127.0.0.1]"):
        with (
            PinnedClient(allow_private=False, timeout=5) as client,
            pytest.raises(InvalidParameter) as refused,
        ):
            client.request("GET", f"http://{host}:{port}/x")
        assert refused.value.code == "url_not_allowed"
    assert server.requests == []


def test_an_address_in_the_url_is_not_looked_up(
    server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    looked: list[str] = []
    real_lookup = socket.getaddrinfo

    def lookup(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        looked.append(host)
        return real_lookup(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    server.files["/list.csv"] = Served(body=b"id\na\n")
    port = server.server.server_address[1]
    with PinnedClient(allow_private=True, timeout=5) as client:
        assert client.request("GET", f"http://127.0.0.1:{port}/list.csv").status == 200
    assert looked == ["127.0.0.1"]  # the connection's own (urllib3's connect), no other
