"""A real webhook receiver for tests: an HTTP server on 127.0.0.1 in a thread that checks
every request's Standard Webhooks signature with an implementation written here from the
spec (not the product's code), drops duplicates by ``webhook-id`` as a receiver should, and
answers as the test scripts it (503 with ``Retry-After``, 429, 410, a slow answer, …)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def spec_signatures(secret: str, msg_id: str, timestamp: str, body: bytes) -> str:
    """The ``v1,`` signature the spec defines: HMAC-SHA256, keyed by the base64-decoded part
    of the secret after ``whsec_``, over ``{id}.{timestamp}.{body}``, base64-encoded."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    content = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    return "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()


def spec_verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Whether any signature in ``webhook-signature`` (space-delimited) is the secret's."""
    expected = spec_signatures(
        secret, headers["webhook-id"], headers["webhook-timestamp"], body
    ).encode()
    return any(
        hmac.compare_digest(expected, given.encode())
        for given in headers.get("webhook-signature", "").split(" ")
    )


@dataclass
class Received:
    """One request as it arrived, and whether the signature held."""

    headers: dict[str, str]
    body: bytes
    verified: bool
    status: int

    @property
    def payload(self) -> dict[str, Any]:
        """The body as JSON."""
        loaded: dict[str, Any] = json.loads(self.body)
        return loaded


Script = Callable[[int, dict[str, str]], tuple[int, dict[str, str]]]
"""Given the request's number (from 0) and headers: the status and headers to answer."""


def always_ok(number: int, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    """Answer every request 204."""
    return 204, {}


@dataclass
class Receiver:
    """What a running receiver saw; ``secrets`` are the ones it accepts (set by the test)."""

    url: str
    secrets: list[str] = field(default_factory=list)
    script: Script = always_ok
    requests: list[Received] = field(default_factory=list)
    arrived: int = 0
    """Requests whose body was read, answered or not yet."""
    seen: set[str] = field(default_factory=set)
    accepted: list[dict[str, Any]] = field(default_factory=list)
    """Payloads of verified, first-seen, 2xx-answered requests: what the receiver processed."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def changes(self) -> list[tuple[str, str, str, int]]:
        """Every processed change as (audience key, change, external id, revision), in order."""
        found = []
        for payload in self.accepted:
            if payload["type"] != "audience.membership_changed":
                continue
            for section in payload["data"]["audiences"]:
                for change in section["changes"]:
                    found.append(
                        (section["key"], change["change"], change["id"], change["revision"])
                    )
        return found

    def members(self, key: str) -> set[str]:
        """The audience's members as the receiver rebuilt them from what it processed."""
        members: set[str] = set()
        for payload in self.accepted:
            if payload["type"] != "audience.membership_changed":
                continue
            for section in payload["data"]["audiences"]:
                if section["key"] != key:
                    continue
                for change in section["changes"]:
                    if change["change"] == "entered":
                        members.add(change["id"])
                    else:
                        members.discard(change["id"])
        return members


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {key.lower(): value for key, value in self.headers.items()}
            with receiver.lock:
                number = receiver.arrived
                receiver.arrived += 1
            status, extra = receiver.script(number, headers)  # may hold the answer back
            with receiver.lock:
                verified = any(spec_verify(s, headers, body) for s in receiver.secrets)
                receiver.requests.append(Received(headers, body, verified, status))
                fresh = headers.get("webhook-id") not in receiver.seen
                if verified and 200 <= status < 300:
                    receiver.seen.add(headers["webhook-id"])
                    if fresh:
                        receiver.accepted.append(json.loads(body))
            answer = b"" if status == 204 else b"ok"  # a 204 has no body (the connection is reused)
            self.send_response(status)
            for key, value in extra.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    return Handler


@contextmanager
def receiving(script: Script = always_ok) -> Iterator[Receiver]:
    """Run a receiver on 127.0.0.1 until the block ends."""
    receiver = Receiver("", script=script)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    host, port = server.server_address[:2]
    receiver.url = f"http://{host!s}:{port}/hooks"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
