"""Shortcuts for the hottest reads: answered from the process's memory without FastAPI's
dependency resolution, or handed to the documented route unchanged.

Is-member and a profile's audiences are asked far more often than anything else, and once
their answer is cached, FastAPI's per-request work (resolving dependencies, validating the path
and the query) costs more than finding the answer. A shortcut sits in front of its route with
the same path. It answers only a plain GET whose every part is already known in memory: the key
(with at least the read role), the answer, and an in-process rate limit with room left. Anything
else (a miss, a query string, an id the route would refuse, a missing or unknown key, a rate
limit reached or kept elsewhere) goes to the full route, which gives every error, so both paths
answer alike.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from audiences.api.deps import CALLER_STATE, ID_PATTERN, PROFILE_ID_PATTERN, get_runtime
from audiences.api.ratelimit import RateLimiter
from audiences.errors import RateLimited
from audiences.schemas.api_keys import ROLE_RANK, Role
from audiences.services import api_keys
from audiences.services.callers import Caller

Answer = Callable[[Request, Caller], Response | None]
"""Builds the route's response from memory alone, or None when something is not cached."""

PATH_PATTERNS = {
    "audience_id": re.compile(ID_PATTERN),
    "profile_id": re.compile(PROFILE_ID_PATTERN),
}


@dataclass(frozen=True)
class Shortcut:
    """A GET route of ``router`` by its path, and how to answer it from memory."""

    router: APIRouter
    path: str
    answer: Answer

    def route(self) -> APIRoute:
        """The documented route the shortcut stands in front of."""
        return next(
            route
            for route in self.router.routes
            if isinstance(route, APIRoute)
            and route.path == self.path
            and "GET" in (route.methods or ())
        )


class MemoryShortcut:
    """The ASGI app of a shortcut: the answer from memory, else the full route."""

    def __init__(self, full: APIRoute, answer: Answer) -> None:
        self.full = full
        self.answer = answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = self.full  # metrics and logs see the documented route
        request = Request(scope, receive)
        response = self._respond(request)
        if response is None:
            await self.full.handle(scope, receive, send)
            return
        await response(scope, receive, send)

    def _respond(self, request: Request) -> Response | None:
        if request.method != "GET" or request.scope.get("query_string"):
            return None
        if not all(PATH_PATTERNS[name].match(value) for name, value in request.path_params.items()):
            return None
        limiter: RateLimiter = request.app.state.rate_limiter
        caller = _known_caller(request)
        if caller is None or not limiter.in_process:
            return None
        response = self.answer(request, caller)
        if response is None:
            return None
        try:
            headers = limiter.hit(caller.key_id)
        except RateLimited:
            return None  # refused hits are not counted: the full route refuses it again
        state = request.scope.setdefault("state", {})
        state["response_headers"] = headers
        state[CALLER_STATE] = caller
        return response


def _known_caller(request: Request) -> Caller | None:
    """The caller of a well-formed bearer token this process has checked lately, if it may read."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    caller = api_keys.cached(get_runtime(request).reads, token)
    if caller is None or ROLE_RANK[caller.role] < ROLE_RANK[Role.READ]:
        return None
    return caller


def install(app: FastAPI, shortcuts: Iterable[Shortcut]) -> None:
    """Put each shortcut first in the app's routes. Only its own route's path matches it, and
    that route gets every request the shortcut does not answer."""
    for shortcut in shortcuts:
        asgi = MemoryShortcut(shortcut.route(), shortcut.answer)
        route = Route(shortcut.path, asgi, methods=["GET"], include_in_schema=False)
        app.router.routes.insert(0, route)
