"""Sending calls: the httpx client (the transport seam), authentication and retries.

A failed attempt is retried when the call cannot apply twice (``Call.retryable``) and the
failure is passing: no connection, a timeout, 408, 409 ``idempotency_in_flight``, 429 or a 5xx.
The wait doubles from ``Retry.backoff`` with full jitter, and a ``Retry-After`` from the server
is honoured instead (up to ``Retry.max_wait``). 429 is retried whatever the call: the server
refused it without doing anything.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import httpx

from audiences import __version__
from audiences.sdk._call import Call
from audiences.sdk.errors import Unreachable, error_for, problem_of

T = TypeVar("T")
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)


@dataclass(frozen=True)
class Retry:
    """How often and how patiently to retry: ``attempts`` in all, waits doubling from
    ``backoff`` seconds up to ``max_backoff``, with jitter; ``Retry-After`` up to ``max_wait``."""

    attempts: int = 4
    backoff: float = 0.5
    max_backoff: float = 8.0
    max_wait: float = 60.0

    @classmethod
    def none(cls) -> Retry:
        """One attempt, no retry."""
        return cls(attempts=1)

    def wait(self, attempt: int, response: httpx.Response | None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        after = _retry_after(response) if response is not None else None
        if after is not None:
            return min(after, self.max_wait)
        ceiling = min(self.backoff * 2 ** (attempt - 1), self.max_backoff)
        return random.uniform(ceiling / 2, ceiling)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


def should_retry(call: Call[Any], response: httpx.Response) -> bool:
    """Whether this answer to ``call`` is worth another attempt."""
    status = response.status_code
    if status == 429:
        return True
    if status == 409:
        return problem_of(response).code == "idempotency_in_flight"
    return status in RETRY_STATUSES and call.retryable


def client_options(
    url: str, key: str | None, timeout: httpx.Timeout | float | None
) -> dict[str, Any]:
    """What both httpx clients are built with: the base URL, the key, a user agent."""
    headers = {"User-Agent": f"audiences-python/{__version__}"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return {
        "base_url": url.rstrip("/"),
        "headers": headers,
        "timeout": DEFAULT_TIMEOUT if timeout is None else timeout,
    }


def _request(call: Call[Any], content: Any) -> dict[str, Any]:
    return {
        "method": call.method,
        "url": call.path,
        "params": call.params,
        "json": call.json,
        "headers": call.headers,
        "content": content,
    }


class SyncHttp:
    """Sends calls on an ``httpx.Client``, retrying as :class:`Retry` says."""

    def __init__(self, client: httpx.Client, retry: Retry) -> None:
        self.client = client
        self.retry = retry

    def run(self, call: Call[T]) -> T:
        """Send ``call`` (with retries) and parse its answer; an :class:`ApiError` otherwise."""
        return call.parse(self._send(call, stream=False))

    @contextmanager
    def stream(self, call: Call[Any]) -> Iterator[httpx.Response]:
        """Send ``call`` and yield its successful answer unread (a download streams)."""
        response = self._send(call, stream=True)
        try:
            yield response
        finally:
            response.close()

    def _send(self, call: Call[Any], *, stream: bool) -> httpx.Response:
        attempt = 1
        while True:
            try:
                content = call.body() if call.body else None
                request = self.client.build_request(**_request(call, content))
                response = self.client.send(request, stream=stream)
            except httpx.TransportError as exc:
                if attempt >= self.retry.attempts or not call.retryable:
                    raise Unreachable(f"{type(exc).__name__}: {exc}") from exc
                time.sleep(self.retry.wait(attempt, None))
                attempt += 1
                continue
            if response.is_success:
                return response
            if stream:
                response.read()
                response.close()
            if attempt >= self.retry.attempts or not should_retry(call, response):
                raise error_for(response)
            time.sleep(self.retry.wait(attempt, response))
            attempt += 1


class AsyncHttp:
    """Sends calls on an ``httpx.AsyncClient``, retrying as :class:`Retry` says."""

    def __init__(self, client: httpx.AsyncClient, retry: Retry) -> None:
        self.client = client
        self.retry = retry

    async def run(self, call: Call[T]) -> T:
        """Send ``call`` (with retries) and parse its answer; an :class:`ApiError` otherwise."""
        return call.parse(await self._send(call, stream=False))

    @asynccontextmanager
    async def stream(self, call: Call[Any]) -> AsyncIterator[httpx.Response]:
        """Send ``call`` and yield its successful answer unread (a download streams)."""
        response = await self._send(call, stream=True)
        try:
            yield response
        finally:
            await response.aclose()

    async def _send(self, call: Call[Any], *, stream: bool) -> httpx.Response:
        attempt = 1
        while True:
            try:
                content = call.abody() if call.abody else None
                request = self.client.build_request(**_request(call, content))
                response = await self.client.send(request, stream=stream)
            except httpx.TransportError as exc:
                if attempt >= self.retry.attempts or not call.retryable:
                    raise Unreachable(f"{type(exc).__name__}: {exc}") from exc
                await asyncio.sleep(self.retry.wait(attempt, None))
                attempt += 1
                continue
            if response.is_success:
                return response
            if stream:
                await response.aread()
                await response.aclose()
            if attempt >= self.retry.attempts or not should_retry(call, response):
                raise error_for(response)
            await asyncio.sleep(self.retry.wait(attempt, response))
            attempt += 1
