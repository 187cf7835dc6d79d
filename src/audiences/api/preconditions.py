"""HTTP preconditions: ETags from versions, ``If-Match`` on writes, ``Idempotency-Key``."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from functools import partial
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from audiences.api.deps import SessionDep, SettingsDep, get_caller
from audiences.errors import PreconditionRequired
from audiences.services import idempotency
from audiences.services.callers import Caller

IF_MATCH_DOC = "The ETag you read; the write answers 412 if the resource changed since."
IDEMPOTENCY_DOC = (
    "A unique key per logical request: a retry with the same key and body replays the first "
    "response; the same key with another body answers 422; while the first is running, 409."
)


def etag(version: int) -> str:
    """The strong ETag of a resource at ``version``."""
    return f'"{version}"'


ETAG_LIST = r'^\s*(\*|(W/)?"[^"]*"(\s*,\s*(W/)?"[^"]*")*)\s*$'
"""RFC 9110 If-Match: ``*`` or a comma-separated list of entity tags."""


def expected_version(
    settings: SettingsDep,
    if_match: Annotated[
        str | None, Header(description=IF_MATCH_DOC, pattern=ETAG_LIST, max_length=1000)
    ] = None,
) -> frozenset[int] | None:
    """The versions ``If-Match`` accepts; None for ``*`` or no header (428 if required).

    If-Match uses the strong comparison (RFC 9110, 13.1.1): a weak tag (``W/"1"``) never
    matches, so a list of weak tags only answers 412.
    """
    if if_match is None:
        if settings.require_if_match:
            raise PreconditionRequired(
                "send If-Match with the ETag you read", code="if_match_required"
            )
        return None
    if if_match.strip() == "*":
        return None
    tags = [tag.strip() for tag in if_match.split(",")]
    strong = [tag.strip('"') for tag in tags if not tag.startswith("W/")]
    return frozenset(int(tag) for tag in strong if tag.isdigit() and len(tag) < 19)


ExpectedVersion = Annotated[frozenset[int] | None, Depends(expected_version)]


class Idempotency:
    """The ``Idempotency-Key`` of one request: replays, conflicts, and recording the answer."""

    def __init__(self, session: Session, caller: Caller, key: str | None, fingerprint: str) -> None:
        self.session = session
        self.caller = caller
        self.key = key
        self.fingerprint = fingerprint

    def respond(self, status: int, body: dict[str, Any], headers: dict[str, str]) -> JSONResponse:
        """The response, recorded under the key (in the request's transaction) when there is one."""
        if self.key is not None:
            idempotency.record(
                self.session,
                workspace_id=self.caller.workspace_id,
                key=self.key,
                status=status,
                body=body,
                headers=headers,
            )
        return JSONResponse(body, status_code=status, headers=headers)


async def _fingerprint(request: Request) -> str:
    """The request's method, path and body hashed, only when an ``Idempotency-Key`` needs them
    (hashing a 10,000-id write costs more than checking it)."""
    if "idempotency-key" not in request.headers:
        return ""
    body = await request.body()
    return hashlib.sha256(
        request.method.encode() + request.url.path.encode() + b"\0" + body
    ).hexdigest()


async def idempotency_handle(
    session: SessionDep,
    settings: SettingsDep,
    caller: Annotated[Caller, Depends(get_caller)],
    fingerprint: Annotated[str, Depends(_fingerprint)],
    key: Annotated[
        str | None,
        Header(alias="Idempotency-Key", pattern=r"^[!-~]{1,255}$", description=IDEMPOTENCY_DOC),
    ] = None,
) -> AsyncIterator[Idempotency]:
    """Claim the key before the handler runs; release it if the handler fails. Without a key
    it costs nothing (no thread, no statement)."""
    if key is None:
        yield Idempotency(session, caller, None, fingerprint)
        return
    claim = partial(
        idempotency.claim,
        session,
        workspace_id=caller.workspace_id,
        key=key,
        fingerprint=fingerprint,
        ttl_hours=settings.idempotency_ttl_hours,
    )
    replay = await run_in_threadpool(claim)
    if replay is not None:
        raise idempotency.Replayed(replay)
    try:
        yield Idempotency(session, caller, key, fingerprint)
        await run_in_threadpool(session.commit)
    except BaseException:
        await run_in_threadpool(_release, session, caller.workspace_id, key)
        raise


def _release(session: Session, workspace_id: str, key: str) -> None:
    session.rollback()
    idempotency.release(session, workspace_id=workspace_id, key=key)


IdempotencyDep = Annotated[Idempotency, Depends(idempotency_handle, scope="function")]
