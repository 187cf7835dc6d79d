"""External audiences' syncs: queued as durable jobs, recorded as runs, shown as ``sync``.

A sync of a ``file`` or ``sql`` source is a run that replaces the membership: the members
pulled (``services/sync_sources``) go through :func:`memberships.replace` and
:func:`run_history.record_change` like any other change, so the change feed, history, counts
and exports work as for every audience. A failed sync records a failed run and keeps the
members. A ``push`` source has no sync job: its members are written as a static audience's
(``services/static_members``), and its ``sync`` follows those writes.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError
from pyroaring import AbstractBitMap
from sqlalchemy import case, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from audiences import queue
from audiences.errors import Conflict, NotFound, SyncFailed
from audiences.membership.cache import BitmapCache
from audiences.schemas.jobs import JobKind, JobState
from audiences.schemas.syncs import (
    PulledSource,
    PushSource,
    SyncProgress,
    SyncSource,
    SyncState,
    SyncStatus,
    push_source,
)
from audiences.services import attempt_totals, freshness, lifecycle, memberships, run_history
from audiences.services.callers import Caller
from audiences.store.repositories.audiences import AudienceRepository
from audiences.store.tables import AudienceRow, AudienceSyncRow, JobRow, MembershipRow, RunRow

SYNC_HANDLER = "membership.sync"
"""The job that syncs one external audience (registered in ``audiences.jobs.handlers``)."""
TRIGGER = "sync"
"""The trigger of a sync's run."""
ENDED_WITHOUT_RECORD = (JobState.FAILED.value, JobState.CANCELLED.value)
"""Job states that, for the job a sync state still calls ``syncing``, mean the job ended
without recording its sync (a crash spent its attempts, or it was cancelled): the sync then
reads as ``failed`` (``sync_job_failed``), in the API and the metrics alike. A job that
records its sync, succeeded or failed, moves the state off ``syncing`` first."""
_SOURCE: TypeAdapter[PulledSource | PushSource] = TypeAdapter(SyncSource)


def source_of(audience: AudienceRow) -> PulledSource | PushSource | None:
    """An external audience's source as stored (None for other kinds)."""
    if audience.kind != "external":
        return None
    try:
        return _SOURCE.validate_python(audience.source or {"type": "push"})
    except ValidationError:  # stored before sources were typed and not migrated: pushed
        return push_source()


def pulled(audience: AudienceRow) -> PulledSource | None:
    """The source a sync job pulls members from: an external audience's file or SQL source."""
    source = source_of(audience)
    return None if isinstance(source, PushSource) else source


def pushed(audience: AudienceRow) -> bool:
    """Whether the client writes the audience's members by id (static, or external ``push``)."""
    return audience.kind == "static" or isinstance(source_of(audience), PushSource)


def start(session: Session, *, caller: Caller, audience_id: str, max_attempts: int) -> JobRow:
    """Queue a sync of the audience now (``POST …/sync``): its job, or the one already queued
    or running. 409 ``audience_not_syncable`` for an audience with no file or SQL source, and
    the lifecycle's 409 for an inactive or archived one."""
    audience = AudienceRepository(session, caller.workspace_id).get(audience_id)
    if audience is None:
        raise NotFound(f"no audience {audience_id!r}", code="audience_not_found")
    if pulled(audience) is None:
        what = "a push source" if audience.kind == "external" else f"a {audience.kind} audience"
        raise Conflict(
            f"{what} is not synced: only external audiences with a file or SQL source are",
            code="audience_not_syncable",
        )
    lifecycle.require(audience, lifecycle.Action.REFRESH)
    return queue_sync(
        session, audience, trigger="manual", created_by=caller.actor, max_attempts=max_attempts
    )


def queue_sync(
    session: Session,
    audience: AudienceRow,
    *,
    trigger: str,
    created_by: str | None,
    max_attempts: int = queue.DEFAULT_MAX_ATTEMPTS,
) -> JobRow:
    """The audience's sync job: the one queued or running, else a new one; its state says
    ``syncing`` and names the job from now on.

    The audience row is locked first (PostgreSQL), so two callers at once queue one job; a
    running job that has recorded its sync already (it compared the source under the same
    lock) is not waited on, since it will not read the source again."""
    lock_audience(session, audience.id)
    state = _row(session, audience)
    active = [
        job
        for job in queue.active_for_subject(
            session,
            workspace_id=audience.workspace_id,
            subject_id=audience.id,
            handler=SYNC_HANDLER,
        )
        if not (job.id == state.job_id and state.status != SyncStatus.SYNCING.value)
    ]
    if active:
        return active[0]
    job = queue.enqueue(
        session,
        workspace_id=audience.workspace_id,
        kind=JobKind.SYNC,
        handler=SYNC_HANDLER,
        payload={"audience_id": audience.id, "trigger": trigger},
        subject_id=audience.id,
        created_by=created_by,
        max_attempts=max_attempts,
    )
    state.status, state.job_id = SyncStatus.SYNCING.value, job.id
    session.flush()
    return job


def lock_audience(session: Session, audience_id: str) -> None:
    """Lock the audience's row for this transaction (``SELECT … FOR UPDATE`` on PostgreSQL;
    SQLite serialises writers already): what a sync compares its source under, and what a
    source change waits on."""
    stmt = select(AudienceRow.id).where(AudienceRow.id == audience_id).with_for_update()
    session.execute(stmt)


def due(session: Session, *, now: datetime) -> list[AudienceRow]:
    """Live external audiences with a file or SQL source and a scheduled refresh policy whose
    next sync time has come (from their runs, as dynamic audiences' refreshes: a failure is
    retried sooner, see ``services/freshness``)."""
    stmt = select(AudienceRow).where(
        AudienceRow.kind == "external",
        AudienceRow.refresh_mode == "scheduled",
        lifecycle.live(),
    )
    scheduled = [row for row in session.scalars(stmt) if pulled(row) is not None]
    fresh = freshness.of(session, scheduled)
    return [
        row for row in scheduled if (at := fresh[row.id].next_refresh_at) is not None and at <= now
    ]


def record(
    session: Session,
    *,
    audience: AudienceRow,
    members: AbstractBitMap,
    job_id: str,
    cache: BitmapCache | None,
) -> RunRow:
    """A succeeded sync: ``members`` replace the audience's, recorded as a run (who entered,
    who exited), and the sync state says ``synced``; one transaction."""
    state = memberships.locked(session, audience)
    run = run_history.start(
        audience, number=run_history.next_number(session, audience.id), trigger=TRIGGER
    )
    change = memberships.replace(
        session, audience=audience, members=members, cache=cache, cause=f"run:{run.id}"
    )
    run = run_history.record_change(
        session,
        audience=audience,
        state=state,
        members=members,
        change=change,
        trigger=TRIGGER,
        run=run,
    )
    _finish(session, audience, run, job_id, error=None)
    return run


def record_failure(
    session: Session, *, audience: AudienceRow, failure: SyncFailed, job_id: str
) -> RunRow:
    """A failed sync: a failed run saying why, the members left as they were, and the sync
    state ``failed`` with the error and its code."""
    state = memberships.locked(session, audience)
    number = run_history.next_number(session, audience.id)
    run = run_history.start(audience, number=number, trigger=TRIGGER)
    run_history.finish(run, state, status="failed", error=failure.message)
    session.add(run)
    session.flush()
    _finish(session, audience, run, job_id, error=failure)
    return run


def release(session: Session, audience: AudienceRow, *, job_id: str) -> None:
    """A sync job that skipped (the audience parked, or its source no longer pulled): the
    sync state says what it said before the job was queued, from its last run (``synced``,
    ``failed``, else ``pending``), and names no job, instead of ``syncing`` for ever."""
    row = session.get(AudienceSyncRow, audience.id)
    if row is None or row.job_id != job_id:
        return  # another job owns the state now
    row.status = _settled(row).value
    row.job_id = None
    session.flush()


def _settled(row: AudienceSyncRow) -> SyncStatus:
    """The status the sync's recorded outcomes give, with no job under way."""
    if row.last_error is not None:
        return SyncStatus.FAILED
    return SyncStatus.PENDING if row.last_synced_at is None else SyncStatus.SYNCED


def _finish(
    session: Session, audience: AudienceRow, run: RunRow, job_id: str, error: SyncFailed | None
) -> None:
    row = _row(session, audience)
    row.status = (SyncStatus.SYNCED if error is None else SyncStatus.FAILED).value
    row.job_id, row.last_run_id, row.last_attempt_at = job_id, run.id, run.finished_at
    row.attempts += 1
    counted = "synced" if error is None else "failed"
    attempt_totals.add(session, subject=attempt_totals.SYNC, of=audience.id, counts={counted: 1})
    if error is None:
        row.last_synced_at, row.last_error, row.last_error_code = run.finished_at, None, None
    else:
        row.failures += 1
        row.last_error, row.last_error_code = error.message, error.code


def _row(session: Session, audience: AudienceRow) -> AudienceSyncRow:
    """The audience's sync state, inserted if missing with ``ON CONFLICT DO NOTHING`` (two
    first writers at once both find none: neither fails on the primary key)."""
    row = session.get(AudienceSyncRow, audience.id)
    if row is not None:
        return row
    values = {
        "audience_id": audience.id,
        "workspace_id": audience.workspace_id,
        "status": SyncStatus.PENDING.value,
        "attempts": 0,
        "failures": 0,
    }
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(insert(AudienceSyncRow).values(**values).on_conflict_do_nothing())
    return session.get_one(AudienceSyncRow, audience.id, populate_existing=True)


def states(
    session: Session,
    rows: Iterable[AudienceRow],
    *,
    writing: frozenset[str],
    members: dict[str, MembershipRow],
) -> dict[str, SyncState]:
    """The ``sync`` of each external audience among ``rows``: a pulled one's from its sync
    state (a job that died for good without ending its sync reads as ``failed``); a pushed
    one's from its writes (``syncing`` while some are waiting) and its last change."""
    external = [row for row in rows if row.kind == "external"]
    if not external:
        return {}
    ids = [row.id for row in external]
    stored = {
        row.audience_id: row
        for row in session.scalars(
            select(AudienceSyncRow).where(AudienceSyncRow.audience_id.in_(ids))
        )
    }
    jobs = _jobs(session, [r.job_id for r in stored.values() if r.status == "syncing"])
    found = {}
    for audience in external:
        if pulled(audience) is None:
            found[audience.id] = _pushed(audience.id in writing, members.get(audience.id))
        else:
            found[audience.id] = _pulled(stored.get(audience.id), jobs)
    return found


def _pushed(in_progress: bool, state: MembershipRow | None) -> SyncState:
    at = None if state is None else state.computed_at
    if in_progress:
        status = SyncStatus.SYNCING
    else:
        status = SyncStatus.PENDING if at is None else SyncStatus.SYNCED
    return SyncState(status=status, last_synced_at=at, last_attempt_at=at)


def _pulled(row: AudienceSyncRow | None, jobs: dict[str, JobRow]) -> SyncState:
    if row is None:
        return SyncState(status=SyncStatus.PENDING)
    view: dict[str, Any] = {
        "status": SyncStatus(row.status),
        "last_synced_at": row.last_synced_at,
        "last_attempt_at": row.last_attempt_at,
        "last_error": row.last_error,
        "last_error_code": row.last_error_code,
        "job_id": row.job_id,
        "last_run_id": row.last_run_id,
    }
    job = jobs.get(row.job_id or "")
    if job is not None and job.state == JobState.RUNNING.value:
        view["progress"] = _progress(job)
    elif job is not None and job.state in ENDED_WITHOUT_RECORD:
        view["status"] = SyncStatus.FAILED
        view["last_error"] = job.last_error or f"the sync job was {job.state}"
        view["last_error_code"] = "sync_job_failed"
        view["last_attempt_at"] = job.finished_at
    return SyncState(**view)


def _jobs(session: Session, job_ids: list[str | None]) -> dict[str, JobRow]:
    """Of these jobs (of syncs said to be ``syncing``), those running (their progress shows)
    and those that ended failed or cancelled (a sync job that ends so never recorded its
    sync: a recorded sync ends the job succeeded)."""
    wanted = [job_id for job_id in job_ids if job_id]
    if not wanted:
        return {}
    states = (JobState.RUNNING.value, *ENDED_WITHOUT_RECORD)
    stmt = select(JobRow).where(JobRow.id.in_(wanted), JobRow.state.in_(states))
    return {job.id: job for job in session.scalars(stmt)}


def _progress(job: JobRow) -> SyncProgress:
    """A running sync's progress, from its job's last checkpoint (``jobs/sync_jobs``): the
    counts of the pull under way (a source changed meanwhile is pulled again from zero)."""
    counts = job.counts or {}
    return SyncProgress(
        rows_read=counts.get("rows", 0),
        rows_total=counts.get("rows_total"),
        bytes_fetched=counts.get("bytes_fetched"),
        bytes_total=counts.get("bytes_total"),
    )


def totals(session: Session) -> tuple[int, int, dict[str, int]]:
    """Every sync attempted and failed so far, and the external audiences by sync status
    (the metrics), a sync whose job ended without recording it counted ``failed`` as the API
    shows it."""
    made = attempt_totals.totals(session, attempt_totals.SYNC)
    attempts, failures = sum(made.values()), made.get(("", "failed"), 0)
    dead = AudienceSyncRow.status == SyncStatus.SYNCING.value
    status = case(
        (dead & JobRow.state.in_(ENDED_WITHOUT_RECORD), SyncStatus.FAILED.value),
        else_=AudienceSyncRow.status,
    )
    counted = session.execute(
        select(status, func.count())
        .select_from(AudienceSyncRow)
        .outerjoin(JobRow, JobRow.id == AudienceSyncRow.job_id)
        .group_by(status)
    )
    by_status = {str(status): int(count) for status, count in counted}
    return int(attempts), int(failures), by_status
