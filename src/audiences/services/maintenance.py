"""Housekeeping work run as jobs: purging records that have outlived their use."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.orm import Session

from audiences.store.tables import IdempotencyKeyRow


def purge_idempotency_keys(
    session: Session, *, workspace_id: str | None, ttl_hours: int, now: datetime
) -> int:
    """Delete the idempotency keys older than ``ttl_hours`` of one workspace (or of all, with
    None: the scheduler's hourly sweep); how many went.

    Such keys would be replaced on their next use anyway; purging keeps the table small.
    Deleting is idempotent, so the job may safely run twice.
    """
    stmt = delete(IdempotencyKeyRow).where(
        IdempotencyKeyRow.created_at < now - timedelta(hours=ttl_hours)
    )
    if workspace_id is not None:
        stmt = stmt.where(IdempotencyKeyRow.workspace_id == workspace_id)
    deleted: int = session.execute(stmt).rowcount  # type: ignore[attr-defined]
    return deleted
