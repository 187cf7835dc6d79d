"""Sending one message: the SSRF guard before each request, timeouts, capped answers."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import pytest

from audiences.config import Settings
from audiences.kit import webhooks
from audiences.services import senders
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


def test_retry_after_in_seconds_or_as_a_date() -> None:
    """``Retry-After`` as a number of seconds or an HTTP date; anything else is ignored."""
    assert senders._retry_after("120") == 120.0
    assert senders._retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert senders._retry_after("soon") is None


@contextmanager
def listening(answer: bytes | None = None) -> Iterator[tuple[int, list[bytes]]]:
    """A raw TCP server on loopback: it reads the request and sends ``answer`` (or nothing)."""
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
            done.wait(5)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], accepted
    finally:
        done.set()
        server.close()
        thread.join(5)
