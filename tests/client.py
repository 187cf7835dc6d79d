"""A synchronous test client over httpx's ASGI transport: the real app, in process, no sockets.

httpx's ``ASGITransport`` is async-only; this runs one event loop in a background thread (an
anyio blocking portal) so plain synchronous tests can call the app, while race tests use
:meth:`ApiClient.gather` to send many requests at once on that loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import ExitStack
from typing import Any

import httpx
from anyio.from_thread import BlockingPortal, start_blocking_portal
from fastapi import FastAPI

from tests import ledger


class ApiClient:
    """``get/post/put/patch/delete/request`` like httpx.Client, against an ASGI app."""

    def __init__(self, app: FastAPI, headers: dict[str, str] | None = None) -> None:
        self.app = app
        self._stack = ExitStack()
        self.portal: BlockingPortal = self._stack.enter_context(start_blocking_portal())
        transport = httpx.ASGITransport(app=app)
        self.async_client = httpx.AsyncClient(
            transport=transport, base_url="http://testserver", headers=headers or {}
        )

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send one request and wait for the response."""
        content = kwargs.get("content")
        if (
            content is not None
            and not isinstance(content, bytes | str)
            and isinstance(content, Iterable)
        ):
            kwargs["content"] = _aiter(content)
        response = self.portal.call(lambda: self.async_client.request(method, url, **kwargs))
        ledger.record(self.app, method, response)
        return response

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def put(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", url, **kwargs)

    def patch(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("PATCH", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", url, **kwargs)

    def gather(
        self, calls: list[Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]]
    ) -> list[httpx.Response]:
        """Run several requests concurrently on the client's loop; responses in call order."""

        async def run_all() -> list[httpx.Response]:
            import anyio

            results: list[httpx.Response | None] = [None] * len(calls)

            async def one(index: int) -> None:
                response = await calls[index](self.async_client)
                ledger.record(self.app, response.request.method, response)
                results[index] = response

            async with anyio.create_task_group() as group:
                for index in range(len(calls)):
                    group.start_soon(one, index)
            return [result for result in results if result is not None]

        return self.portal.call(run_all)

    def close(self) -> None:
        """Close the client and stop its event loop."""
        self.portal.call(self.async_client.aclose)
        self._stack.close()


async def _aiter(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk
