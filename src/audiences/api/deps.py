"""FastAPI dependencies: settings, the request's database session, and the authenticated caller."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import AfterValidator
from pydantic_core import PydanticCustomError
from sqlalchemy.orm import Session, sessionmaker

from audiences.api.paths import restore_slashes
from audiences.api.ratelimit import RateLimiter
from audiences.config import Settings
from audiences.engines.base import RESERVED_COLUMNS
from audiences.errors import Unauthorized
from audiences.schemas.api_keys import Role
from audiences.schemas.events import RESERVED_EVENT_FIELDS
from audiences.services import api_keys
from audiences.services.callers import Caller
from audiences.services.runtime import Runtime

READ_METHODS = frozenset({"GET", "HEAD"})
bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer aud_…`")


async def get_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    settings: Settings = request.app.state.settings
    return settings


async def get_session(request: Request) -> AsyncIterator[Session]:
    """A session whose transaction commits when the handler returns and rolls back on error.

    Function-scoped, so the commit happens before the response is sent: a failed commit is
    reported to the client instead of being lost after a 2xx. GET and HEAD get a read-only
    session, which on SQLite neither waits for writers nor holds them up. The session connects
    only when first used, and the commit or rollback takes a thread only when a transaction
    began: a route that did not touch it costs nothing.
    """
    reading = request.method in READ_METHODS
    factory: sessionmaker[Session] = (
        request.app.state.read_session_factory if reading else request.app.state.session_factory
    )
    session = factory()
    try:
        yield session
        if session.in_transaction():
            await run_in_threadpool(session.commit)
    except BaseException:
        if session.in_transaction():
            await run_in_threadpool(session.rollback)
        raise
    finally:
        if session.in_transaction():
            await run_in_threadpool(session.close)
        else:
            session.close()


@contextmanager
def read_session(request: Request) -> Iterator[Session]:
    """A read-only session outside the dependency system, for work a route does in a thread."""
    factory: sessionmaker[Session] = request.app.state.read_session_factory
    with factory() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings)]


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


async def authenticate(request: Request) -> Caller:
    """The caller behind the request's bearer token; :class:`Unauthorized` without a valid one.

    Resolved once per request and kept: :class:`~audiences.api.middleware.AuthenticationMiddleware`
    asks first, before anything reads the body, and :func:`get_caller` finds the answer. A
    request without a valid key counts against the rate limit of its client address (429 past
    it, instead of 401), so unknown keys are limited like any other traffic.

    Runs on the event loop: a key this process has checked lately is answered from its read
    cache, and only a miss (or a rate-limit store across the network) waits in a thread.
    """
    state = request.scope.setdefault("state", {})
    known: Caller | None = state.get(AUTHENTICATED_STATE)
    if known is not None:
        return known
    try:
        caller = await _caller_of(request)
    except Unauthorized:
        await _count(request, f"address:{client_address(request)}")
        raise
    state[AUTHENTICATED_STATE] = caller
    return caller


async def get_caller(request: Request, credentials: Credentials) -> Caller:
    """The authenticated caller (:func:`authenticate`), after its rate limit is counted (once
    per request, however many dependencies ask).

    ``credentials`` declares the bearer scheme in the OpenAPI contract; the token itself is
    read by :func:`authenticate`.
    """
    state = request.scope.setdefault("state", {})
    known: Caller | None = state.get(CALLER_STATE)
    if known is not None:
        return known
    caller = await authenticate(request)
    state["response_headers"] = await _count(request, caller.key_id)
    state[CALLER_STATE] = caller
    return caller


CALLER_STATE = "audiences.caller"
"""Where a request's caller is kept once authenticated and its rate limit counted."""
AUTHENTICATED_STATE = "audiences.authenticated"
"""Where a request's caller is kept once authenticated, before its rate limit is counted."""


def client_address(request: Request) -> str:
    """The client's IP address as the server saw it (behind a proxy, the one uvicorn takes from
    ``X-Forwarded-For`` when the proxy is trusted)."""
    return request.client.host if request.client is not None else "unknown"


async def _caller_of(request: Request) -> Caller:
    scheme, token = get_authorization_scheme_param(request.headers.get("authorization"))
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized(
            "send an API key as `Authorization: Bearer <key>`",
            code="missing_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    caller = api_keys.cached(get_runtime(request).reads, token)
    if caller is not None:
        return caller
    try:
        return await run_in_threadpool(_authenticate, request, token)
    except Unauthorized as exc:
        exc.headers.setdefault("WWW-Authenticate", 'Bearer error="invalid_token"')
        raise


async def _count(request: Request, key: str) -> dict[str, str]:
    """Count one request against ``key``'s rate limit: the headers, or :class:`RateLimited`."""
    limiter: RateLimiter = request.app.state.rate_limiter
    return limiter.hit(key) if limiter.in_process else await run_in_threadpool(limiter.hit, key)


def _authenticate(request: Request, token: str) -> Caller:
    with read_session(request) as session:
        return api_keys.authenticate(session, token, reads=get_runtime(request).reads)


def require(role: Role) -> object:
    """A dependency that authenticates and then requires at least ``role`` (403 otherwise).

    It calls :func:`get_caller` itself rather than depending on it: every level of FastAPI's
    dependency tree costs time on each request, and the hottest reads have little else.
    """

    async def dependency(request: Request, credentials: Credentials) -> Caller:
        caller = await get_caller(request, credentials)
        caller.require(role)
        return caller

    return Depends(dependency)


ReadCaller = Annotated[Caller, require(Role.READ)]
WriteCaller = Annotated[Caller, require(Role.WRITE)]
AdminCaller = Annotated[Caller, require(Role.ADMIN)]


ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
AudienceId = Annotated[str, Path(pattern=ID_PATTERN, description="The audience's id.")]
GroupId = Annotated[str, Path(pattern=ID_PATTERN, description="The group's id.")]
KeyId = Annotated[str, Path(pattern=ID_PATTERN, description="The API key's id.")]
DestinationId = Annotated[str, Path(pattern=ID_PATTERN, description="The destination's id.")]
DeliveryId = Annotated[
    str, Path(pattern=ID_PATTERN, description="The delivery's id (its `webhook-id`).")
]


def get_runtime(request: Request) -> Runtime:
    """The process's profile engine and caches."""
    runtime: Runtime = request.app.state.runtime
    return runtime


async def _runtime_dependency(request: Request) -> Runtime:
    return get_runtime(request)


RuntimeDep = Annotated[Runtime, Depends(_runtime_dependency)]

ATTRIBUTE_PATTERN = r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*$"


def _not_reserved(name: str) -> str:
    if name in RESERVED_COLUMNS:
        raise ValueError(f"{name!r} is a built-in column, not an attribute")
    return name


# Built-in column names are refused as the path parameter and excluded in the contract (`not`),
# so clients and fuzzers learn it from the schema rather than from a 422.
AttributeName = Annotated[
    str,
    Path(
        pattern=ATTRIBUTE_PATTERN,
        max_length=128,
        description="The attribute's name (not `pid`, `external_id`, `extra`, `updated_at`).",
        json_schema_extra={"not": {"enum": sorted(RESERVED_COLUMNS)}},
    ),
    AfterValidator(_not_reserved),
]


def _not_event_field(name: str) -> str:
    if name in RESERVED_EVENT_FIELDS:
        raise ValueError(f"{name!r} is a built-in field of every event, not a property")
    return name


EventPropertyName = Annotated[
    str,
    Path(
        pattern=ATTRIBUTE_PATTERN,
        max_length=128,
        description="The property's name (not a built-in field: "
        + ", ".join(f"`{name}`" for name in sorted(RESERVED_EVENT_FIELDS))
        + ").",
        json_schema_extra={"not": {"enum": sorted(RESERVED_EVENT_FIELDS)}},
    ),
    AfterValidator(_not_event_field),
]
PROFILE_ID_PATTERN = r"^[^\x00-\x1f]{1,512}$"
_PROFILE_ID = re.compile(PROFILE_ID_PATTERN)


def _external_id(value: str) -> str:
    # Checked after the encoded slashes are given back (``api/paths.py``): while routed, a
    # slash inside the segment is a control character the pattern refuses.
    value = restore_slashes(value)
    if not _PROFILE_ID.match(value):
        raise PydanticCustomError(
            "string_pattern_mismatch",
            "String should match pattern '{pattern}'",
            {"pattern": PROFILE_ID_PATTERN},
        )
    return value


ProfileId = Annotated[
    str,
    Path(
        description="The profile's external id, percent-encoded: a `/` in it is sent as `%2F`.",
        json_schema_extra={"pattern": PROFILE_ID_PATTERN},
    ),
    AfterValidator(_external_id),
]
