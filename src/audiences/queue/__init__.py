"""The durable job queue: enqueue, claim, heartbeat, checkpoint, finish, cancel and reap.

Every function takes the session first, flushes and never commits: the caller owns the
transaction. Services enqueue and cancel inside their own transaction; the worker runs each
queue call in a short transaction of its own.

A job's life::

    enqueue ──► queued ──claim──► running ──complete──► succeeded
                  ▲                 │ │ └──fail, attempts left──► queued (run_after = backoff)
                  │                 │ └────fail, none left────► failed
                  └──reap (lease────┘ cancel requested ───────► cancelled
                      expired)

**At least once.** A claim leases the job to one worker until ``lease_expires_at``; the worker
extends the lease with heartbeats while its handler runs. If the worker dies (a crash, a kill,
a lost connection) the lease expires and :func:`reap` puts the job back in the queue, counting
the attempt. A handler may therefore run more than once for one job, even after doing part or
all of its work: **handlers must be idempotent** (upserts, set-based replaces, writes keyed by
the job id), and may resume from the last checkpoint (``processed``, ``counts``, ``errors``
are saved together, atomically). A worker that lost its lease cannot write to the job again:
every write names the lease owner and attempt it holds.

**Claiming.** PostgreSQL: ``UPDATE … WHERE id = (SELECT … FOR UPDATE SKIP LOCKED)``, so
workers never wait for each other. SQLite: the same single statement; SQLite ignores the
locking clause and serialises writers (every transaction is ``BEGIN IMMEDIATE``, see
:mod:`audiences.store.db`), so the statement is atomic. Times come from the workers' clocks,
which must agree to well within a lease (NTP).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, literal, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from audiences.errors import Conflict
from audiences.kit.clock import utcnow
from audiences.kit.ids import new_id
from audiences.queue.transitions import MAX_ERRORS as MAX_ERRORS
from audiences.queue.transitions import after_failure, clear_lease, finish, record
from audiences.queue.transitions import backoff_delay as backoff_delay
from audiences.schemas.jobs import JobKind, JobState
from audiences.store.tables import JobRow
from audiences.store.tables.base import UTCDateTime

DEFAULT_MAX_ATTEMPTS = 3
MAX_MESSAGE = 2000
HANDLER_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
QUEUED, RUNNING = JobState.QUEUED.value, JobState.RUNNING.value
NO_SYNC = {"synchronize_session": False}
ENQUEUED = "audiences.queue.enqueued"
"""Set in ``session.info`` when a session queues a job, so a worker pool of the same process
can be woken when it commits."""


class LeaseLost(Exception):
    """The worker no longer holds the job: its lease expired and it was reaped, or re-claimed."""


@dataclass(frozen=True)
class ClaimedJob:
    """A job as its worker sees it for one attempt; ``owner`` and ``attempt`` are the lease."""

    id: str
    workspace_id: str
    kind: str
    handler: str
    payload: dict[str, Any]
    subject_id: str | None
    attempt: int
    max_attempts: int
    owner: str
    processed: int = 0
    total: int | None = None
    counts: Mapping[str, int] = field(default_factory=dict)
    created_by: str | None = None
    created_at: datetime | None = None
    """When the job was queued (an import's rows are looked up as received from then on)."""


def enqueue(
    session: Session,
    *,
    workspace_id: str,
    kind: JobKind | str,
    handler: str,
    payload: Mapping[str, Any] | None = None,
    subject_id: str | None = None,
    dedupe_key: str | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    run_after: datetime | None = None,
    created_by: str | None = None,
    result: Any = None,
    flush: bool = True,
) -> JobRow:
    """Queue a job (``result``: what it shows until it ends); with ``dedupe_key``, the
    workspace's job with that key if there is one. Without ``flush`` a new job (no
    ``dedupe_key``) is only added: its id is set, the rest at the caller's next flush.

    The key is unique per workspace for good (finished jobs included), so a retried request
    that enqueues "the import of upload 42" gets the same job back, never a second one.
    """
    if not HANDLER_NAME.match(handler):
        raise ValueError(f"handler {handler!r} is not a `domain.verb` name")
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    row = JobRow(
        id=new_id(),
        workspace_id=workspace_id,
        kind=JobKind(kind).value,
        handler=handler,
        payload=dict(payload or {}),
        subject_id=subject_id,
        dedupe_key=dedupe_key,
        max_attempts=max_attempts,
        run_after=run_after or utcnow(),
        created_by=created_by,
        result=result,
    )
    session.info[ENQUEUED] = True
    if dedupe_key is None:
        session.add(row)
        if flush:
            session.flush()
        return row
    existing = _by_dedupe_key(session, workspace_id, dedupe_key)
    if existing is not None:
        return existing
    try:
        # A savepoint, so a concurrent enqueue of the same key (PostgreSQL blocks on the
        # unique index until the other commits) costs this insert and not the caller's work.
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        existing = _by_dedupe_key(session, workspace_id, dedupe_key)
        if existing is None:
            raise
        return existing
    return row


def active_for_subject(
    session: Session, *, workspace_id: str, subject_id: str, handler: str | None = None
) -> list[JobRow]:
    """Queued or running jobs on ``subject_id`` (so a service can refuse a second run)."""
    stmt = select(JobRow).where(
        JobRow.workspace_id == workspace_id,
        JobRow.subject_id == subject_id,
        JobRow.state.in_((QUEUED, RUNNING)),
    )
    if handler is not None:
        stmt = stmt.where(JobRow.handler == handler)
    return list(session.scalars(stmt.order_by(JobRow.created_at, JobRow.id)))


def claim(
    session: Session,
    *,
    owner: str,
    lease_seconds: float,
    handlers: Collection[str] | None = None,
    now: datetime | None = None,
) -> ClaimedJob | None:
    """Lease the next due job (oldest ``run_after`` first) to ``owner``; None if none is due.

    ``handlers`` limits the claim to jobs this worker can run, so a worker of an older release
    leaves jobs of newer handlers to others. The claim counts an attempt.
    """
    now = now or utcnow()
    candidate = aliased(JobRow)
    pick = select(candidate.id).where(candidate.state == QUEUED, candidate.run_after <= now)
    if handlers is not None:
        pick = pick.where(candidate.handler.in_(sorted(handlers)))
    pick = pick.order_by(candidate.run_after, candidate.id).limit(1)
    stmt = (
        update(JobRow)
        .where(JobRow.id == pick.with_for_update(skip_locked=True).scalar_subquery())
        .where(JobRow.state == QUEUED)
        .values(
            state=RUNNING,
            attempts=JobRow.attempts + 1,
            lease_owner=owner,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            heartbeat_at=now,
            started_at=case(
                (JobRow.started_at.is_(None), literal(now, UTCDateTime())),
                else_=JobRow.started_at,
            ),
            updated_at=now,
        )
        .returning(JobRow)
    )
    row = session.execute(stmt, execution_options=NO_SYNC).scalar_one_or_none()
    if row is None:
        return None
    session.refresh(row)
    return ClaimedJob(
        id=row.id,
        workspace_id=row.workspace_id,
        kind=row.kind,
        handler=row.handler,
        payload=dict(row.payload or {}),
        subject_id=row.subject_id,
        attempt=row.attempts,
        max_attempts=row.max_attempts,
        owner=owner,
        processed=row.processed,
        total=row.total,
        counts=dict(row.counts or {}),
        created_by=row.created_by,
        created_at=row.created_at,
    )


def heartbeat(
    session: Session, *, job: ClaimedJob, lease_seconds: float, now: datetime | None = None
) -> bool:
    """Extend the lease, and those of the jobs taken for its work (:func:`take_queued`); True
    if cancel was requested. :class:`LeaseLost` if it is gone."""
    now = now or utcnow()
    expires = now + timedelta(seconds=lease_seconds)
    stmt = (
        update(JobRow)
        .where(_leased(job))
        .values(lease_expires_at=expires, heartbeat_at=now)
        .returning(JobRow.cancel_requested)
    )
    cancel_requested = session.execute(stmt, execution_options=NO_SYNC).scalar_one_or_none()
    if cancel_requested is None:
        raise LeaseLost(job.id)
    taken = (
        update(JobRow)
        .where(JobRow.lease_owner == job.owner, JobRow.state == RUNNING, JobRow.id != job.id)
        .values(lease_expires_at=expires, heartbeat_at=now)
    )
    session.execute(taken, execution_options=NO_SYNC)
    return bool(cancel_requested)


def checkpoint(
    session: Session,
    *,
    job: ClaimedJob,
    lease_seconds: float,
    processed: int | None = None,
    total: int | None = None,
    counts: Mapping[str, int] | None = None,
    errors: Iterable[Mapping[str, Any]] = (),
    now: datetime | None = None,
) -> bool:
    """Save progress, counts and new errors together and extend the lease.

    ``processed`` never goes backwards: a smaller value than the stored one is ignored.
    Returns True if cancel was requested; :class:`LeaseLost` if the lease is gone.
    """
    now = now or utcnow()
    row = _leased_row(session, job)
    record(row, processed=processed, total=total, counts=counts, errors=errors)
    row.lease_expires_at = now + timedelta(seconds=lease_seconds)
    row.heartbeat_at = now
    row.updated_at = now
    session.flush()
    return row.cancel_requested


def complete(
    session: Session,
    *,
    job: ClaimedJob,
    result: Any = None,
    counts: Mapping[str, int] | None = None,
    errors: Iterable[Mapping[str, Any]] = (),
    now: datetime | None = None,
) -> None:
    """Mark the job succeeded with its result; :class:`LeaseLost` if the lease is gone."""
    row = _leased_row(session, job)
    record(row, counts=counts, errors=errors)
    row.result = result
    finish(row, JobState.SUCCEEDED, now or utcnow())
    session.flush()


def take_queued(
    session: Session,
    *,
    job_ids: Collection[str],
    owner: str,
    lease_seconds: float,
    now: datetime | None = None,
) -> list[str]:
    """Lease those of ``job_ids`` that are still queued and due to ``owner``, a worker that
    will do their work with its own job's (each counts an attempt, as a claim does); their
    ids. PostgreSQL skips rows another transaction holds; SQLite serialises writers. If the
    worker dies before :func:`finish_taken`, their leases expire and :func:`reap` queues them
    again, like any job of a lost worker."""
    if not job_ids:
        return []
    now = now or utcnow()
    pick = (
        select(JobRow.id)
        .where(JobRow.id.in_(sorted(job_ids)), JobRow.state == QUEUED, JobRow.run_after <= now)
        .with_for_update(skip_locked=True)
    )
    stmt = (
        update(JobRow)
        .where(JobRow.id.in_(pick.scalar_subquery()), JobRow.state == QUEUED)
        .values(
            state=RUNNING,
            attempts=JobRow.attempts + 1,
            lease_owner=owner,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            heartbeat_at=now,
            started_at=now,
            updated_at=now,
        )
        .returning(JobRow.id)
    )
    return list(session.execute(stmt, execution_options=NO_SYNC).scalars())


def finish_taken(
    session: Session,
    *,
    results: Mapping[str, tuple[Any, Mapping[str, int], int]],
    owner: str,
    now: datetime | None = None,
) -> list[str]:
    """Mark jobs :func:`take_queued` leased to ``owner`` as succeeded, each with its
    ``(result, counts, processed)``: the ids of those it still held (a job reaped meanwhile
    is left to whoever holds it now)."""
    if not results:
        return []
    now = now or utcnow()
    held = session.scalars(
        select(JobRow)
        .where(
            JobRow.id.in_(sorted(results)),
            JobRow.state == RUNNING,
            JobRow.lease_owner == owner,
        )
        .with_for_update()
    ).all()
    for row in held:
        result, counts, processed = results[row.id]
        record(row, processed=processed, total=processed, counts=counts)
        row.result = result
        finish(row, JobState.SUCCEEDED, now)
    session.flush()
    return [row.id for row in held]


def release_taken(
    session: Session, *, job_ids: Collection[str], owner: str, now: datetime | None = None
) -> None:
    """Put jobs :func:`take_queued` leased to ``owner`` back in the queue, their attempt not
    counted: the work they were taken for was not done."""
    if not job_ids:
        return
    now = now or utcnow()
    session.execute(
        update(JobRow)
        .where(JobRow.id.in_(sorted(job_ids)), JobRow.state == RUNNING, JobRow.lease_owner == owner)
        .values(
            state=QUEUED,
            attempts=JobRow.attempts - 1,
            lease_owner=None,
            lease_expires_at=None,
            updated_at=now,
        ),
        execution_options=NO_SYNC,
    )


def held_by(session: Session, *, job_ids: Collection[str], owner: str) -> set[str]:
    """Of ``job_ids``, those ``owner`` still leases (locked for this transaction)."""
    if not job_ids:
        return set()
    stmt = (
        select(JobRow.id)
        .where(JobRow.id.in_(sorted(job_ids)), JobRow.state == RUNNING, JobRow.lease_owner == owner)
        .with_for_update()
    )
    return set(session.scalars(stmt))


def fail(
    session: Session,
    *,
    job: ClaimedJob,
    error: str,
    backoff_seconds: float,
    retry: bool = True,
    counts: Mapping[str, int] | None = None,
    errors: Iterable[Mapping[str, Any]] = (),
    now: datetime | None = None,
) -> JobState:
    """Record a failed attempt: back to the queue after a backoff, or failed when none are left.

    ``retry=False`` fails the job at once (an error no retry can fix). A job whose cancel was
    requested ends cancelled instead. Returns the state the job is now in.
    """
    now = now or utcnow()
    row = _leased_row(session, job)
    message = error[:MAX_MESSAGE]
    failure = {"code": "attempt_failed", "message": message, "attempt": job.attempt}
    record(row, counts=counts, errors=[*errors, failure])
    row.last_error = message
    state = after_failure(row, retry=retry, backoff_seconds=backoff_seconds, now=now)
    session.flush()
    return state


def cancelled(
    session: Session,
    *,
    job: ClaimedJob,
    counts: Mapping[str, int] | None = None,
    errors: Iterable[Mapping[str, Any]] = (),
    now: datetime | None = None,
) -> None:
    """Mark a running job cancelled: its handler stopped on a cancel request."""
    row = _leased_row(session, job)
    record(row, counts=counts, errors=errors)
    finish(row, JobState.CANCELLED, now or utcnow())
    session.flush()


def release(session: Session, *, job: ClaimedJob, now: datetime | None = None) -> None:
    """Give a job back to the queue at once, uncounted: its worker is shutting down."""
    now = now or utcnow()
    row = _leased_row(session, job)
    row.state = QUEUED
    row.attempts = max(row.attempts - 1, 0)
    row.run_after = now
    row.updated_at = now
    clear_lease(row)
    session.flush()


def cancel(session: Session, *, job: JobRow, now: datetime | None = None) -> JobRow:
    """Cancel a queued job at once; ask a running one to stop (its handler sees it next beat).

    :class:`Conflict` (``job_finished``) if the job already finished. Each step is one
    conditional UPDATE, so a claim racing with the cancel is either cancelled or asked to stop.
    """
    now = now or utcnow()
    mine = JobRow.id == job.id
    stop_now = update(JobRow).where(mine, JobRow.state == QUEUED)
    stop_now = stop_now.values(
        state=JobState.CANCELLED.value, cancel_requested=True, finished_at=now, updated_at=now
    )
    ask = update(JobRow).where(mine, JobRow.state == RUNNING)
    ask = ask.values(cancel_requested=True, updated_at=now)
    for stmt in (stop_now, ask):
        if session.execute(stmt.returning(JobRow.id), execution_options=NO_SYNC).first():
            session.refresh(job)
            return job
    session.refresh(job)
    raise Conflict(f"job {job.id!r} already {job.state}", code="job_finished")


def reap(
    session: Session,
    *,
    backoff_seconds: float = 0.0,
    now: datetime | None = None,
    limit: int = 100,
) -> list[str]:
    """Return running jobs whose lease expired to the queue; the ids of the jobs reaped.

    The lost attempt was counted when it was claimed: a job with attempts left is queued again
    (after ``backoff_seconds``, doubling), one without is failed, one asked to cancel ends
    cancelled. The lost lease is recorded as an error, so the crash stays visible.
    """
    now = now or utcnow()
    stmt = (
        select(JobRow)
        .where(JobRow.state == RUNNING, JobRow.lease_expires_at < now)
        .order_by(JobRow.lease_expires_at, JobRow.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = list(session.scalars(stmt))
    for row in rows:
        message = f"the lease of {row.lease_owner} expired: its worker stopped or lost the database"
        lost = {"code": "lease_expired", "message": message, "attempt": row.attempts}
        record(row, errors=[lost])
        row.last_error = message
        after_failure(row, retry=True, backoff_seconds=backoff_seconds, now=now)
    session.flush()
    return [row.id for row in rows]


def _by_dedupe_key(session: Session, workspace_id: str, dedupe_key: str) -> JobRow | None:
    stmt = select(JobRow).where(
        JobRow.workspace_id == workspace_id, JobRow.dedupe_key == dedupe_key
    )
    found: JobRow | None = session.scalars(stmt).one_or_none()
    return found


def _leased(job: ClaimedJob) -> ColumnElement[bool]:
    return and_(
        JobRow.id == job.id,
        JobRow.state == RUNNING,
        JobRow.lease_owner == job.owner,
        JobRow.attempts == job.attempt,
    )


def _leased_row(session: Session, job: ClaimedJob) -> JobRow:
    stmt = select(JobRow).where(_leased(job)).with_for_update()
    row: JobRow | None = session.scalars(
        stmt, execution_options={"populate_existing": True}
    ).one_or_none()
    if row is None:
        raise LeaseLost(job.id)
    return row
