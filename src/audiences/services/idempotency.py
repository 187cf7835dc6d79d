"""Idempotency keys: the first answer to a create, replayed to retries of the same request.

A key is claimed in a transaction of its own before the work starts, so concurrent retries
see it at once: the same body while the first is running gets 409, a different body 422, and
a retry after it finished gets the recorded response. The response is recorded in the same
transaction as the work itself, so either both happen or neither. A claim whose request died
without releasing it (a crashed process) can be taken over after ``IN_FLIGHT_TIMEOUT``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from audiences.errors import Conflict, Unprocessable
from audiences.kit.clock import utcnow
from audiences.store.tables import IdempotencyKeyRow

IN_FLIGHT_TIMEOUT = timedelta(seconds=60)


@dataclass(frozen=True)
class StoredResponse:
    """A recorded response: what a retry with the same key receives."""

    status: int
    body: Any
    headers: dict[str, str]


class Replayed(Exception):
    """Raised when the key was already answered; carries the answer to send again."""

    def __init__(self, response: StoredResponse) -> None:
        super().__init__("replayed")
        self.response = response


def claim(
    session: Session, *, workspace_id: str, key: str, fingerprint: str, ttl_hours: int
) -> StoredResponse | None:
    """Claim ``key`` for a request (None), or return the response recorded for it earlier."""
    session.commit()
    row = _load(session, workspace_id, key)
    if row is not None and _expired(row, ttl_hours):
        session.delete(row)
        session.commit()
        row = None
    if row is None:
        session.add(IdempotencyKeyRow(workspace_id=workspace_id, key=key, request_hash=fingerprint))
        try:
            session.commit()
            return None
        except IntegrityError:
            session.rollback()
            row = _load(session, workspace_id, key)
            if row is None:  # released between our insert and this read: treat as in flight
                raise _in_flight(key) from None
    if row.request_hash != fingerprint:
        raise Unprocessable(
            f"Idempotency-Key {key!r} was used for a different request",
            code="idempotency_key_reused",
        )
    if row.response_status is None:
        raise _in_flight(key)
    return StoredResponse(row.response_status, row.response_body, dict(row.response_headers or {}))


def record(
    session: Session,
    *,
    workspace_id: str,
    key: str,
    status: int,
    body: Any,
    headers: dict[str, str],
) -> None:
    """Record the response for a claimed key, in the caller's (the work's) transaction."""
    row = _load(session, workspace_id, key)
    assert row is not None, "record() needs a claimed key"
    row.response_status = status
    row.response_body = body
    row.response_headers = headers
    session.flush()


def release(session: Session, *, workspace_id: str, key: str) -> None:
    """Give up a claim whose request failed, so the client can retry with the same key."""
    session.execute(
        delete(IdempotencyKeyRow).where(
            IdempotencyKeyRow.workspace_id == workspace_id,
            IdempotencyKeyRow.key == key,
            IdempotencyKeyRow.response_status.is_(None),
        )
    )
    session.commit()


def _load(session: Session, workspace_id: str, key: str) -> IdempotencyKeyRow | None:
    return session.get(IdempotencyKeyRow, (workspace_id, key), populate_existing=True)


def _expired(row: IdempotencyKeyRow, ttl_hours: int) -> bool:
    age = utcnow() - row.created_at
    if row.response_status is None:
        return age > IN_FLIGHT_TIMEOUT
    return age > timedelta(hours=ttl_hours)


def _in_flight(key: str) -> Conflict:
    return Conflict(
        f"a request with Idempotency-Key {key!r} is still in flight; retry shortly",
        code="idempotency_in_flight",
        headers={"Retry-After": "1"},
    )
