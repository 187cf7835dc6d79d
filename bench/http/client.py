"""A bare HTTP/1.1 client on asyncio: keep-alive connections, JSON bodies, timed calls.

The load generator of this benchmark. It does the least a client can do (write the request,
read the status, headers and ``Content-Length`` body), so that on a small machine the
measurement spends its CPU in the server, not in the client (httpx costs several times more
per request). It runs in the benchmark's own process, never in the server's.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import orjson


class HttpError(RuntimeError):
    """An answer the benchmark did not expect (the run stops: a figure over errors is no figure)."""


@dataclass
class Answer:
    """One response: status, headers (lower-case names) and body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


class Connection:
    """One keep-alive connection to ``host:port``, one request at a time."""

    def __init__(self, host: str, port: int, token: str) -> None:
        self.host, self.port = host, port
        self._auth = f"Authorization: Bearer {token}\r\n".encode()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: Any = None) -> Answer:
        """Send one request (``body`` as JSON when given) and read its whole answer; a GET on
        a connection the server closed while it sat idle (its keep-alive timeout) is sent again
        on a new one."""
        try:
            return await self._exchange(method, path, body)
        except (asyncio.IncompleteReadError, ConnectionError):
            await self.close()
            if method != "GET":
                raise
            return await self._exchange(method, path, body)

    async def _exchange(self, method: str, path: str, body: Any) -> Answer:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        payload = b"" if body is None else orjson.dumps(body)
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n".encode() + self._auth
        if body is not None:
            head += b"Content-Type: application/json\r\n"
        head += f"Content-Length: {len(payload)}\r\n\r\n".encode()
        self._writer.write(head + payload)
        lines = (await self._reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if "content-length" not in headers:
            raise HttpError(f"{method} {path}: an answer without Content-Length: {headers}")
        data = await self._reader.readexactly(int(headers["content-length"]))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return Answer(status, headers, data)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            self._reader = None


@dataclass
class Timings:
    """Seconds per call of one operation, and the answers that were not a success."""

    seconds: list[float] = field(default_factory=list)
    refused: int = 0  # 429: the server asked the client to slow down

    def add(self, started: float) -> None:
        self.seconds.append(time.perf_counter() - started)


async def call(
    connection: Connection, method: str, path: str, body: Any = None, *, expect: int = 200
) -> Answer:
    """One request that must answer ``expect`` (``HttpError`` otherwise)."""
    answer = await connection.request(method, path, body)
    if answer.status != expect:
        text = answer.body[:500].decode(errors="replace")
        raise HttpError(f"{method} {path}: {answer.status} (expected {expect}): {text}")
    return answer
