"""Sending one message: the SSRF guard before each request, timeouts, capped answers, answers
cut short or informational, connections kept alive."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import BinaryIO

import pytest

from audiences.config import Settings
from audiences.kit import webhooks
from audiences.services import egress, senders
from tests.services.test_egress import Dns

SECRET = webhooks.new_secret()


def test_the_guard_checks_the_address_right_before_sending(settings: Settings) -> None:
    """With the guard on, a loopback receiver is refused without a connection attempt."""
    guarded = settings.model_copy(update={"egress_allow_private": False})
    with listening() as (port, accepted):
        outcome = senders.post(
            url=f"http://127.0.0.1:{port}/x",
            secrets=[SECRET],
            msg_id="msg_1",
            body="{}",
            settings=guarded,
        )
    assert not outcome.ok and outcome.status is None
    assert "loopback" in (outcome.error or "")
    assert accepted == []


def test_a_webhook_host_rebound_to_loopback_after_its_check_is_never_reached(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The name answers a public address to the check and loopback after: the connection goes
    to the address checked, never to the receiver on loopback."""
    dns = Dns(monkeypatch)
    dns.answers["hooks.rebind.test"] = [["93.184.216.34"], ["127.0.0.1"]]
    guarded = settings.model_copy(update={"egress_allow_private": False})
    with listening() as (port, accepted):
        outcome = senders.post(
            url=f"http://hooks.rebind.test:{port}/x",
            secrets=[SECRET],
            msg_id="msg_1",
            body="{}",
            settings=guarded,
        )
    assert not outcome.ok and outcome.status is None
    assert dns.connected == ["93.184.216.34"]
    assert accepted == []


def test_a_receiver_that_hangs_times_out(settings: Settings) -> None:
    """A receiver that accepts and never answers costs the timeout, then fails the attempt."""
    quick = settings.model_copy(
        update={"egress_allow_private": True, "webhook_timeout_seconds": 0.3}
    )
    with listening() as (port, _):
        started = time.monotonic()
        outcome = senders.post(
            url=f"http://127.0.0.1:{port}/x",
            secrets=[SECRET],
            msg_id="msg_1",
            body="{}",
            settings=quick,
        )
    assert not outcome.ok and outcome.error == "timed out"
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("host", ["xn--a.example", "xn--zz-.example", "a..example", "[a.]", "[::1"])
def test_a_url_saved_before_names_were_checked_is_a_failed_attempt(
    settings: Settings, host: str
) -> None:
    """A stored URL httpx cannot parse (an invalid IDNA name saved before the API checked
    names) fails the attempt with the reason instead of raising out of the delivery run."""
    outcome = senders.post(
        url=f"http://{host}/hook", secrets=[SECRET], msg_id="msg_1", body="{}", settings=settings
    )
    assert not outcome.ok and outcome.status is None
    assert outcome.error and (host in outcome.error or "the URL's host" in outcome.error)


def test_a_huge_answer_is_read_only_up_to_the_cap(settings: Settings) -> None:
    """A receiver streaming a large body: only ``webhook_response_bytes`` are kept."""
    capped = settings.model_copy(
        update={"egress_allow_private": True, "webhook_response_bytes": 100}
    )
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 50000000\r\n\r\n" + b"x" * 65536
    with listening(answer) as (port, _):
        outcome = senders.post(
            url=f"http://127.0.0.1:{port}/x",
            secrets=[SECRET],
            msg_id="msg_1",
            body="{}",
            settings=capped,
        )
    assert outcome.ok and outcome.status == 200
    assert outcome.response == "x" * 100


def test_an_answer_cut_short_of_its_length_fails_the_attempt(settings: Settings) -> None:
    """A receiver that promises 100 bytes, sends 3 and closes: not delivered (it is sent
    again), though the status line said 200."""
    allowed = settings.model_copy(update={"egress_allow_private": True})
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc"
    with listening(answer, close=True) as (port, _):
        outcome = post(f"http://127.0.0.1:{port}/x", allowed)
    assert not outcome.ok and outcome.status is None
    assert "ProtocolError" in (outcome.error or "")


def test_a_receiver_that_never_reads_the_body_times_out(settings: Settings) -> None:
    """Sending a body the receiver does not read stalls once the socket buffers are full:
    the attempt ends at the timeout, reported as a timeout."""
    quick = settings.model_copy(
        update={"egress_allow_private": True, "webhook_timeout_seconds": 0.3}
    )
    with listening() as (port, _):
        outcome = post(f"http://127.0.0.1:{port}/x", quick, body="x" * 20_000_000)
    assert not outcome.ok and outcome.error == "timed out"


def test_messages_go_out_on_one_kept_alive_connection(settings: Settings) -> None:
    allowed = settings.model_copy(update={"egress_allow_private": True})
    with answering([NO_CONTENT] * 5) as receiver, senders.client(allowed) as http:
        outcomes = [post(receiver.url, allowed, given=http) for _ in range(5)]
    assert [outcome.status for outcome in outcomes] == [204] * 5
    assert receiver.connections == 1 and len(receiver.requests) == 5


def test_an_informational_answer_fails_the_attempt_and_is_not_read_by_the_next(
    settings: Settings,
) -> None:
    """http.client passes over 100 Continue only: a 103 is refused, and its connection (the
    real answer still to come on it) is closed, so the next message gets its own answer."""
    allowed = settings.model_copy(update={"egress_allow_private": True})
    early = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + SERVER_ERROR
    with answering([early, NO_CONTENT]) as receiver, senders.client(allowed) as http:
        first = post(receiver.url, allowed, given=http)
        second = post(receiver.url, allowed, given=http)
    assert not first.ok and "informational answer (103)" in (first.error or "")
    assert (second.ok, second.status) == (True, 204)
    assert receiver.connections == 2


def test_retry_after_in_seconds_or_as_a_date() -> None:
    """``Retry-After`` as a number of seconds or an HTTP date; anything else is ignored."""
    assert senders._retry_after("120") == 120.0
    assert senders._retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert senders._retry_after("soon") is None
    assert senders._retry_after("\u00b9") is None  # a digit to str.isdigit, not to float


NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"
SERVER_ERROR = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"


def post(
    url: str, settings: Settings, *, body: str = "{}", given: egress.PinnedClient | None = None
) -> senders.Outcome:
    """One signed attempt of a small message (or ``body``) to ``url``."""
    return senders.post(
        url=url, secrets=[SECRET], msg_id="msg_1", body=body, settings=settings, given=given
    )


@dataclass
class Answering:
    """A keep-alive receiver that answers each request with the next scripted answer."""

    url: str
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)


@contextmanager
def answering(answers: list[bytes]) -> Iterator[Answering]:
    """A raw HTTP/1.1 receiver on loopback: each request (headers, then its Content-Length of
    body) gets the next of ``answers``; connections are served one at a time."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(5)
    receiver = Answering(f"http://127.0.0.1:{server.getsockname()[1]}/x")
    script = list(answers)

    def serve() -> None:
        while script:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            receiver.connections += 1
            with connection, connection.makefile("rb") as reader:
                while script:
                    head = _head(reader)
                    if not head:
                        break
                    length = re.search(rb"(?i)content-length: *(\d+)", head)
                    reader.read(int(length.group(1)) if length else 0)
                    receiver.requests.append(head)
                    with suppress(OSError):
                        connection.sendall(script.pop(0))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.close()
        thread.join(5)


def _head(reader: BinaryIO) -> bytes:
    """A request's head, read up to its blank line; empty when the client closed."""
    lines = []
    for line in iter(reader.readline, b""):
        if line == b"\r\n":
            break
        lines.append(line)
    return b"".join(lines)


@contextmanager
def listening(
    answer: bytes | None = None, *, close: bool = False
) -> Iterator[tuple[int, list[bytes]]]:
    """A raw TCP server on loopback: it reads the request and sends ``answer`` (or nothing);
    with ``close``, it closes the connection at once after."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(5)
    accepted: list[bytes] = []
    done = threading.Event()

    def serve() -> None:
        try:
            connection, _ = server.accept()
        except OSError:
            return
        with connection:
            accepted.append(connection.recv(65536))
            if answer is not None:
                with suppress(OSError):
                    connection.sendall(answer)
            if not close:
                done.wait(5)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], accepted
    finally:
        done.set()
        server.close()
        thread.join(5)
