"""Freshness of scheduled audiences: when each was last refreshed, when it runs next, and which
are due. Derived from the run history, so it cannot drift from what actually ran.

A failed run is retried sooner than the interval (1, 2, 4 … minutes, capped at the interval),
and the failure stays visible in the audience's ``evaluation`` until a run succeeds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from audiences.services import lifecycle
from audiences.store.tables import AudienceRow, RunRow

RETRY_BASE_SECONDS = 60


@dataclass(frozen=True)
class Freshness:
    """When an audience was last refreshed successfully and when it is due next."""

    last_refreshed_at: datetime | None
    next_refresh_at: datetime | None
    consecutive_failures: int


@dataclass(frozen=True)
class _Latest:
    number: int
    status: str
    started_at: datetime
    finished_at: datetime | None


def of(session: Session, audiences: Iterable[AudienceRow]) -> dict[str, Freshness]:
    """The freshness of each of these audiences (``next_refresh_at`` only for scheduled ones)."""
    rows = list(audiences)
    ids = [row.id for row in rows]
    latest = _latest_runs(session, ids)
    successes = _last_successes(session, ids)
    found = {}
    for row in rows:
        run = latest.get(row.id)
        success = successes.get(row.id)
        failures = (
            0
            if run is None or run.status != "failed"
            else run.number - (success[0] if success else 0)
        )
        found[row.id] = Freshness(
            last_refreshed_at=None if success is None else success[1],
            next_refresh_at=_next(row, run, failures),
            consecutive_failures=failures,
        )
    return found


def due(session: Session, *, now: datetime, workspace_id: str | None = None) -> list[AudienceRow]:
    """Scheduled dynamic audiences whose next refresh time has come (archived and inactive
    audiences are parked: they keep their members and are not refreshed)."""
    stmt = select(AudienceRow).where(
        AudienceRow.refresh_mode == "scheduled",
        AudienceRow.kind == "dynamic",
        lifecycle.live(),
    )
    if workspace_id is not None:
        stmt = stmt.where(AudienceRow.workspace_id == workspace_id)
    scheduled = list(session.scalars(stmt))
    fresh = of(session, scheduled)
    return [
        audience
        for audience in scheduled
        if (at := fresh[audience.id].next_refresh_at) is not None and at <= now
    ]


def _next(row: AudienceRow, run: _Latest | None, failures: int) -> datetime | None:
    if row.refresh_mode != "scheduled" or row.refresh_interval_seconds is None:
        return None
    if lifecycle.parked(row):
        return None
    interval = timedelta(seconds=row.refresh_interval_seconds)
    if run is None:
        return row.created_at
    if run.status == "running":
        return None
    if run.status == "failed":
        retry = timedelta(seconds=RETRY_BASE_SECONDS * 2 ** min(failures - 1, 16))
        return (run.finished_at or run.started_at) + min(retry, interval)
    return run.started_at + interval


def _latest_runs(session: Session, ids: list[str]) -> dict[str, _Latest]:
    newest = (
        select(RunRow.audience_id, func.max(RunRow.number).label("number"))
        .where(RunRow.audience_id.in_(ids))
        .group_by(RunRow.audience_id)
        .subquery()
    )
    stmt = select(
        RunRow.audience_id, RunRow.number, RunRow.status, RunRow.started_at, RunRow.finished_at
    ).join(
        newest, and_(RunRow.audience_id == newest.c.audience_id, RunRow.number == newest.c.number)
    )
    return {
        row.audience_id: _Latest(row.number, row.status, row.started_at, row.finished_at)
        for row in session.execute(stmt)
    }


def _last_successes(session: Session, ids: list[str]) -> dict[str, tuple[int, datetime | None]]:
    newest = (
        select(RunRow.audience_id, func.max(RunRow.number).label("number"))
        .where(RunRow.audience_id.in_(ids), RunRow.status == "succeeded")
        .group_by(RunRow.audience_id)
        .subquery()
    )
    stmt = select(RunRow.audience_id, RunRow.number, RunRow.finished_at).join(
        newest, and_(RunRow.audience_id == newest.c.audience_id, RunRow.number == newest.c.number)
    )
    return {row.audience_id: (row.number, row.finished_at) for row in session.execute(stmt)}
