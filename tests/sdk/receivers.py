"""Tiny real HTTP servers for the SDK's network tests: a scripted receiver that answers each
request with the next canned response (503 then 200, …), and a proxy in front of a real
Audiences server that can lose the first answer to a request or cut uploads halfway. They
record what arrived."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx


@dataclass
class Arrived:
    """One request as the server saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    """A canned answer; ``cut_after`` closes the connection after reading that many body
    bytes, without answering (an upload interrupted halfway)."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    cut_after: int | None = None


Answer = Callable[[Arrived], Reply]


def _handler(answer: Answer, log: list[Arrived]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            headers = {key.lower(): value for key, value in self.headers.items()}
            arrived = Arrived(self.command, self.path, headers, b"")
            reply = answer(arrived)
            if reply.cut_after is not None:
                arrived.body = self.rfile.read(min(reply.cut_after, length))
                log.append(arrived)
                self.close_connection = True
                return
            arrived.body = self.rfile.read(length)
            log.append(arrived)
            reply = answer(arrived) if reply.status == 0 else reply
            payload = b"" if reply.body is None else json.dumps(reply.body).encode()
            self.send_response(reply.status)
            for key, value in {"Content-Type": "application/json", **reply.headers}.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve  # noqa: N815 (http.server's names)

    return Handler


@contextmanager
def serving(answer: Answer) -> Iterator[tuple[str, list[Arrived]]]:
    """Run a receiver on 127.0.0.1; its base URL and the requests it received."""
    log: list[Arrived] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(answer, log))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", log
    finally:
        server.shutdown()
        server.server_close()


def scripted(*replies: Reply) -> Answer:
    """An answer giving ``replies`` in turn (the last one again once they run out)."""
    queue = list(replies)
    lock = threading.Lock()

    def answer(arrived: Arrived) -> Reply:
        with lock:
            return queue.pop(0) if len(queue) > 1 else queue[0]

    return answer


@dataclass
class Cuts:
    """How many more uploads (requests whose path ends in ``/imports``) a proxy cuts halfway:
    it reads ``after`` bytes of the body, then drops the connection without an answer."""

    left: int
    after: int = 1 << 20


def proxy(upstream: str, lose_first: str | None = None, cuts: Cuts | None = None) -> Answer:
    """Forward every request to ``upstream``; the first ``lose_first`` method's answer is
    thrown away after the server handled it, and 503 sent instead (a lost response); uploads
    are cut while ``cuts`` has some left."""
    lost: list[bool] = []
    lock = threading.Lock()

    def answer(arrived: Arrived) -> Reply:
        if not arrived.body and arrived.headers.get("content-length") not in (None, "0"):
            if cuts is not None and arrived.path.split("?")[0].endswith("/imports"):
                with lock:
                    if cuts.left > 0:
                        cuts.left -= 1
                        return Reply(0, cut_after=cuts.after)
            return Reply(0)  # read the body first, then come back
        keep = {"authorization", "content-type", "idempotency-key", "if-match"}
        headers = {key: value for key, value in arrived.headers.items() if key in keep}
        response = httpx.request(
            arrived.method, upstream + arrived.path, headers=headers, content=arrived.body
        )
        if arrived.method == lose_first and not lost:
            lost.append(True)
            return Reply(503, {"title": "lost"}, {"Retry-After": "0"})
        replayed = {k: v for k, v in response.headers.items() if k.lower() == "idempotent-replayed"}
        body = response.json() if response.content else None
        return Reply(response.status_code, body, replayed)

    return answer
