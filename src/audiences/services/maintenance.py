"""Housekeeping work run as jobs: purging records that have outlived their use."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from audiences.store.tables import DestinationMessageRow, IdempotencyKeyRow

FINISHED = ("delivered", "failed")
"""Statuses of a message that will not be sent again unless a client asks (``pending``
waits for an attempt, ``sending`` is being written)."""


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


def purge_delivery_log(
    session: Session, *, retention_days: int, now: datetime, limit: int | None = None
) -> int:
    """Delete the delivery log's messages finished before ``retention_days`` ago (created
    and delivered before it), with their attempts, across workspaces; how many messages went
    (at most ``limit``: the housekeeping deletes in batches, a transaction each, until a
    batch comes back short).

    Only finished messages go: a message not delivered yet (``pending``, whatever its age, or
    one a client asked to send again) is never deleted, so retention cannot lose a change.
    The conditions are on the deleted rows themselves, so a message a client asks to send
    again while the purge runs is left (PostgreSQL checks them again on the locked row); its
    attempts go with each message (``ON DELETE CASCADE``). 0 keeps everything. Deleting is
    idempotent: any number of schedulers may repeat it.
    """
    if retention_days <= 0:
        return 0
    cutoff = now - timedelta(days=retention_days)
    done = (
        DestinationMessageRow.status.in_(FINISHED),
        DestinationMessageRow.created_at < cutoff,
        or_(
            DestinationMessageRow.delivered_at.is_(None),
            DestinationMessageRow.delivered_at < cutoff,
        ),
    )
    stmt = delete(DestinationMessageRow).where(*done)
    if limit is not None:
        batch = select(DestinationMessageRow.id).where(*done).limit(limit)
        stmt = stmt.where(DestinationMessageRow.id.in_(batch))
    deleted: int = session.execute(stmt.execution_options(synchronize_session=False)).rowcount  # type: ignore[attr-defined]
    return deleted
