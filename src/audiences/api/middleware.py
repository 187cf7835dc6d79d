"""ASGI middleware: request ids, last-resort error handling, authentication before the body,
and the request body's limits (size and time)."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from typing import Any

import anyio
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from audiences.api.deps import authenticate
from audiences.api.problems import PROBLEM_JSON, problem_body
from audiences.errors import AudiencesError, PayloadTooLarge
from audiences.kit.logs import get_logger

REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
log = get_logger("audiences.api")


class RequestContextMiddleware:
    """Gives every request an id (``X-Request-ID``, echoed when the client sent a sane one),
    adds it and any rate-limit headers to every response, and turns an unhandled exception
    into a 500 problem without a stack trace."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                for name, value in state.get("response_headers", {}).items():
                    headers.append((name.lower().encode(), str(value).encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            error = AudiencesError("an unexpected error occurred")
            await _send_problem(send_with_headers, error, request_id, scope.get("path"))


class BodyLimitMiddleware:
    """Refuses request bodies over ``max_bytes`` with 413, counted while streaming in, so an
    oversized body is never buffered whole (a lying or absent Content-Length included)."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        path_limits: Sequence[tuple[re.Pattern[str], int]] = (),
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        # Paths with limits of their own (file uploads, batch calls): the first match wins.
        self.path_limits = list(path_limits)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        limit = next((n for pattern, n in self.path_limits if pattern.match(path)), self.max_bytes)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            request_id = scope.get("state", {}).get("request_id", "unknown")
            await _send_problem(send, self._too_large(limit), request_id, scope.get("path"))
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # An HTTPException, because FastAPI turns any other exception raised while
                    # it reads the body into a 400; the problem handler maps it back to 413.
                    raise HTTPException(413, detail=self._too_large(limit).detail)
            return message

        await self.app(scope, counting_receive, send)

    def _too_large(self, limit: int) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"the request body is over the limit of {limit} bytes",
            code="body_too_large",
            extra={"limit_bytes": limit},
        )


class AuthenticationMiddleware:
    """Authenticates every request under ``prefix`` before anything reads its body: without a
    valid key the answer is 401 (or 429 for an address over its rate limit) whatever the body,
    and a large body is never received. The caller is kept for the route
    (:func:`audiences.api.deps.authenticate`), so a key is checked once per request."""

    def __init__(self, app: ASGIApp, prefix: str = "/v1/") -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope.get("path", "").startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        try:
            await authenticate(Request(scope))
        except AudiencesError as error:
            request_id = scope.get("state", {}).get("request_id", "unknown")
            await _send_problem(send, error, request_id, scope.get("path"))
            return
        await self.app(scope, receive, send)


class BodyTimeoutMiddleware:
    """Answers 408 when a request body stops arriving: each wait for its next part may last at
    most ``seconds`` (like nginx's ``client_body_timeout``), so a slow upload goes on while a
    stalled one frees its connection. The answer closes the connection."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        complete = False

        async def timed_receive() -> Message:
            nonlocal complete
            if complete:  # waiting for a disconnect, not for the body
                return await receive()
            with anyio.move_on_after(self.seconds):
                message = await receive()
                complete = message["type"] != "http.request" or not message.get("more_body")
                return message
            # An HTTPException, as in BodyLimitMiddleware: FastAPI passes it on while reading.
            raise HTTPException(
                408,
                detail=f"the request body stopped arriving for {self.seconds:g} s",
                headers={"Connection": "close"},
            )

        await self.app(scope, timed_receive, send)


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if REQUEST_ID_PATTERN.match(text) else None
    return None


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_problem(send: Send, error: AudiencesError, request_id: str, path: Any) -> None:
    body = json.dumps(problem_body(error, request_id, instance=path)).encode()
    headers = [
        (b"content-type", PROBLEM_JSON.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
