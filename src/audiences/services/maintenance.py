"""Housekeeping work run as jobs: purging records that have outlived their use."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from audiences.config import Settings
from audiences.store.tables import DestinationMessageRow, IdempotencyKeyRow

FINISHED = ("delivered", "failed")
"""Statuses of a message that will not be sent again unless a client asks (``pending``
waits for an attempt; ``sending``, a test message in flight, is not finished until its
outcome is recorded or :func:`fail_interrupted` gives up on it)."""
INTERRUPTED_MARGIN = timedelta(minutes=5)
"""How long past the longest a send may take (the webhook or S3 timeout) a ``sending``
message is left before the housekeeping marks it ``failed``."""
INTERRUPTED = "interrupted: the server stopped before the test message's outcome was recorded"
"""The error of a test message left ``sending``."""


def fail_interrupted(session: Session, *, settings: Settings, now: datetime) -> int:
    """Mark ``failed`` (error :data:`INTERRUPTED`) every ``sending`` message, across
    workspaces, made longer ago than a send may take plus :data:`INTERRUPTED_MARGIN`: a test
    message whose server stopped between sending and recording it (its answer, if any, is
    lost). Failed, it is finished: retention deletes it in its time. How many; idempotent."""
    longest = max(settings.webhook_timeout_seconds, settings.destination_s3_timeout_seconds)
    stmt = (
        update(DestinationMessageRow)
        .where(
            DestinationMessageRow.status == "sending",
            DestinationMessageRow.created_at
            < now - timedelta(seconds=longest) - INTERRUPTED_MARGIN,
        )
        .values(status="failed", last_error=INTERRUPTED)
    )
    failed: int = session.execute(stmt.execution_options(synchronize_session=False)).rowcount  # type: ignore[attr-defined]
    return failed


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
    one a client asked to send again, or a test message still ``sending``: see
    :func:`fail_interrupted`) is never deleted, so retention cannot lose a change.
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
