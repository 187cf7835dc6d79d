"""The streaming sweep: time moves behavioural streaming audiences without any write.

A streaming behavioural rule reads the clock only through event times moved by fixed offsets
(``rules.clock_offsets``: ``timestamp >= now() - INTERVAL 30 DAY`` flips 30 days after the
event). So between two instants ``since`` and ``until`` a profile's answer can change by time
alone only if it has an event timed in ``[since - offset, until - offset]`` for one of the
offsets: one engine scan of the events table by time finds them, and just those profiles are
evaluated again, as of ``until``. Each sweep starts where the previous one ended (its job's
result); with no previous sweep the audiences are refreshed in batch instead, exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from pyroaring import BitMap
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from audiences import rules
from audiences.schemas.jobs import JobState
from audiences.services.evaluation.batch import refresh_many
from audiences.services.evaluation.compiled import bound_rule, workspace_schema
from audiences.services.evaluation.streaming import (
    following_events,
    on_profiles_written,
    reads_events,
    streaming_audiences,
)
from audiences.services.runtime import Runtime
from audiences.store.tables import AudienceRow, JobRow

SWEEP_HANDLER = "evaluation.sweep"
"""The job that sweeps one workspace (queued by the scheduler every sweep interval)."""


@dataclass(frozen=True)
class Swept:
    """What a sweep did: the period it covered and the profiles it evaluated again (all of the
    audiences' members, refreshed in batch, when ``since`` was unknown)."""

    since: datetime | None
    until: datetime
    candidates: BitMap
    refreshed: int = 0


def sweep(
    session: Session,
    *,
    runtime: Runtime,
    workspace_id: str,
    since: datetime | None,
    until: datetime,
) -> Swept:
    """Evaluate again, as of ``until``, the profiles of the workspace whose answer to a
    streaming behavioural audience time may have changed after ``since``; with ``since``
    None, refresh those audiences in batch as of ``until``."""
    moved = following_events(streaming_audiences(session, workspace_id))
    if not moved:
        return Swept(since, until, BitMap())
    if since is None:
        runs = refresh_many(session, runtime=runtime, audiences=moved, trigger="sweep", now=until)
        return Swept(since, until, BitMap(), refreshed=len(runs))
    if until <= since:
        return Swept(since, until, BitMap())
    ranges = time_ranges(session, workspace_id, moved, since=since, until=until)
    candidates = runtime.profiles.pids_with_events_between(workspace_id, ranges)
    on_profiles_written(
        session,
        runtime=runtime,
        workspace_id=workspace_id,
        pids=candidates,
        streaming=moved,
        now=until,
    )
    return Swept(since, until, candidates)


def time_ranges(
    session: Session,
    workspace_id: str,
    audiences: list[AudienceRow],
    *,
    since: datetime,
    until: datetime,
) -> list[tuple[datetime, datetime]]:
    """The event times (both bounds included) whose offsets put a boundary in
    ``(since, until]``: the answer flips at ``t + offset`` or a microsecond after, so
    ``t + offset >= since``."""
    schema = workspace_schema(session, workspace_id)
    offsets: set[timedelta] = set()
    for audience in audiences:
        offsets |= rules.clock_offsets(bound_rule(audience.rule or "", schema).tree)
    return _merged(sorted((since - offset, until - offset) for offset in offsets))


def _merged(ranges: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    """Sorted ranges with the overlapping ones joined (many rules share their windows)."""
    merged: list[tuple[datetime, datetime]] = []
    for low, high in ranges:
        if merged and low <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(high, merged[-1][1]))
        else:
            merged.append((low, high))
    return merged


def last_until(session: Session, workspace_id: str) -> datetime | None:
    """Where the workspace's last successful sweep ended (its job's result), if any."""
    stmt = (
        select(JobRow.result)
        .where(
            JobRow.workspace_id == workspace_id,
            JobRow.handler == SWEEP_HANDLER,
            JobRow.state == JobState.SUCCEEDED,
        )
        .order_by(JobRow.finished_at.desc(), JobRow.id.desc())
        .limit(1)
    )
    result = session.scalar(stmt)
    until = result.get("until") if isinstance(result, dict) else None
    return datetime.fromisoformat(until) if isinstance(until, str) else None


SWEEPS_KEPT = timedelta(hours=1)
"""How long finished sweep jobs are kept: one runs every few seconds per workspace."""


def prune(session: Session, *, now: datetime) -> int:
    """Delete the sweep jobs that finished more than :data:`SWEEPS_KEPT` ago; how many. While
    sweeps run, the last one is younger; after a longer pause none is left, and the next
    sweep, knowing no ``since``, refreshes the audiences in batch, which is exact."""
    stmt = delete(JobRow).where(
        JobRow.handler == SWEEP_HANDLER,
        JobRow.state.in_([JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED]),
        JobRow.finished_at < now - SWEEPS_KEPT,
    )
    return int(session.execute(stmt).rowcount or 0)  # type: ignore[attr-defined]


def workspaces_to_sweep(session: Session) -> list[str]:
    """The workspaces with a live dynamic audience kept by streaming whose rule reads events
    (a superset: the sweep itself finds which are streaming)."""
    stmt = select(AudienceRow.workspace_id, AudienceRow.rule).where(
        AudienceRow.kind == "dynamic",
        AudienceRow.refresh_mode == "streaming",
        AudienceRow.rule.is_not(None),
        AudienceRow.archived.is_(False),
    )
    found = {ws for ws, rule in session.execute(stmt) if reads_events(rule or "")}
    return sorted(found)
