"""The benchmark's webhook receiver, in a process of its own: an ``http.server`` on 127.0.0.1
that parses each body, counts its member changes and answers 204.

Its own process, as a real receiver is: in the service's process it would take the GIL from
whichever side is running (ours builds and records while a request is in flight; the bare
client only waits), which distorts the comparison.
"""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from typing import Any


@dataclass
class Receiver:
    """Where the receiver listens and what it has counted (shared with its process)."""

    url: str
    counts: Any  # a multiprocessing Array of two int64: requests, changes

    @property
    def changes(self) -> int:
        """Member changes received so far."""
        return int(self.counts[1])

    @property
    def requests(self) -> int:
        """Requests received so far."""
        return int(self.counts[0])


def _serve(ready: Connection, counts: Any) -> None:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            found = sum(len(s["changes"]) for s in json.loads(body)["data"].get("audiences", []))
            with counts.get_lock():
                counts[0] += 1
                counts[1] += found
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ready.send(server.server_address[1])
    server.serve_forever()


@contextmanager
def receiver() -> Iterator[Receiver]:
    """Start the receiver process; stop it on leaving."""
    context = multiprocessing.get_context("spawn")
    counts = context.Array("q", 2)
    ours, theirs = context.Pipe()
    process = context.Process(target=_serve, args=(theirs, counts), daemon=True)
    process.start()
    try:
        port = ours.recv()
        yield Receiver(f"http://127.0.0.1:{port}/in", counts)
    finally:
        process.terminate()
        process.join()
