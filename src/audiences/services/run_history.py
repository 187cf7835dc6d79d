"""Recording runs: every change of an audience's members (an evaluation, a static write, an
expiry) becomes a run, and the last :data:`SNAPSHOTS_KEPT` runs of an audience keep their
member set for ``as_of`` reads and change feeds."""

from __future__ import annotations

from datetime import datetime

from pyroaring import AbstractBitMap
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, aliased

from audiences.kit.clock import utcnow
from audiences.kit.ids import new_id
from audiences.membership.bitmaps import Diff, serialize
from audiences.store.tables import AudienceRow, MembershipRow, RunRow

SNAPSHOTS_KEPT = 20
"""Runs per audience that keep their member set."""


def start(
    audience: AudienceRow, *, number: int, trigger: str, now: datetime | None = None
) -> RunRow:
    """A new run of ``audience`` (not added to the session), ``running`` until finished."""
    return RunRow(
        id=new_id(),
        workspace_id=audience.workspace_id,
        audience_id=audience.id,
        number=number,
        trigger=trigger,
        status="running",
        rule=audience.rule,
        started_at=now or utcnow(),
        members_kept=False,
    )


def finish(run: RunRow, state: MembershipRow, *, status: str, error: str | None = None) -> None:
    """End ``run`` as ``status``; the audience's state names it as its last run."""
    run.status = status
    run.error = error
    run.finished_at = utcnow()
    state.status = status
    state.last_error = error
    state.last_run_id = run.id


def next_number(session: Session, audience_id: str) -> int:
    """The number the audience's next run takes (1 for its first)."""
    last = session.scalar(select(func.max(RunRow.number)).where(RunRow.audience_id == audience_id))
    return (last or 0) + 1


def record_change(
    session: Session,
    *,
    audience: AudienceRow,
    state: MembershipRow,
    members: AbstractBitMap,
    change: Diff,
    trigger: str,
    run: RunRow | None = None,
) -> RunRow:
    """A succeeded run for a change made without an evaluation (a static write, an expiry, a
    sync), so its change feed and ``as_of`` work as for evaluated audiences. ``run`` is one
    ``start`` made before the change, when the change had to name it (a sync's)."""
    run = run or start(audience, number=next_number(session, audience.id), trigger=trigger)
    run.size, run.entered, run.exited = len(members), len(change.entered), len(change.exited)
    run.members, run.members_kept = serialize(members), True
    finish(run, state, status="succeeded")
    session.add(run)
    session.flush()
    prune_snapshots(session, [audience.id])
    return run


def prune_snapshots(session: Session, audience_ids: list[str]) -> None:
    """Drop the member sets of these audiences' runs older than their last SNAPSHOTS_KEPT."""
    # Older runs are not read in the transaction that prunes them (and commit expires them all),
    # so the session's copies need no update: that bookkeeping cost more than the statement.
    newer = aliased(RunRow)
    last = (
        select(func.max(newer.number))
        .where(newer.audience_id == RunRow.audience_id)
        .scalar_subquery()
    )
    session.execute(
        update(RunRow)
        .where(RunRow.audience_id.in_(audience_ids), RunRow.members_kept.is_(True))
        .where(RunRow.number <= last - SNAPSHOTS_KEPT)
        .values(members=None, members_kept=False)
        .execution_options(synchronize_session=False)
    )
