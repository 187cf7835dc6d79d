"""Batch evaluation: a rule compiled to the engine's SQL and run where the data is; the member
set replaces the audience's membership and the run records who entered and who exited."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pyroaring import BitMap
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from audiences import rules
from audiences.errors import AudiencesError, Conflict
from audiences.kit.clock import utcnow
from audiences.membership.bitmaps import serialize
from audiences.services import (
    lifecycle,
    member_days,
    memberships,
    run_history,
)
from audiences.services.evaluation.compiled import (
    Schema,
    bound_rule,
    compiled_sql,
    dialect_of,
    frozen_schema,
    member_sets,
    to_engine_sql,
    workspace_schema,
)
from audiences.services.runtime import Runtime
from audiences.store.tables import AudienceRow, RunRow


def refresh(session: Session, *, runtime: Runtime, audience: AudienceRow, trigger: str) -> RunRow:
    """Evaluate a dynamic audience on the engine now and record the run.

    A failing run (an engine error, a rule that no longer validates) is recorded as failed with
    the message, and the previous membership stays served. An inactive or archived audience is
    not evaluated (409, see :mod:`audiences.services.lifecycle`).
    """
    lifecycle.require(audience, lifecycle.Action.REFRESH)
    if audience.kind == "static":
        # A static audience is not evaluated: its refresh lets members past ttl_days go.
        return member_days.expire(session, audience=audience, trigger=trigger)
    return refresh_many(session, runtime=runtime, audiences=[audience], trigger=trigger)[0]


def refresh_many(
    session: Session,
    *,
    runtime: Runtime,
    audiences: Sequence[AudienceRow],
    trigger: str,
    now: datetime | None = None,
) -> list[RunRow]:
    """Evaluate dynamic audiences in the order given (each after those it depends on) and record
    a run for each, as :func:`refresh` does one by one, in the session's transaction.

    What the refreshes share is done once: their membership rows are locked in one statement,
    the schema and the last run numbers read once, and the new memberships and runs go out
    together at the next flush (an audience whose rule asks about another flushes what came
    before it, so it reads the members just computed). A failing run is recorded as failed and
    its audience keeps its previous members; the others are not held back. ``now`` is the
    time the rules are evaluated at (default: each run's start).
    """
    for audience in audiences:
        if audience.kind != "dynamic" or audience.rule is None:
            raise Conflict(
                f"a {audience.kind} audience is not evaluated from a rule",
                code="audience_not_evaluable",
            )
    if not audiences:
        return []
    states = memberships.lock_all(session, audiences)
    ids = [audience.id for audience in audiences]
    numbers = _last_numbers(session, ids)
    workspaces = {audience.workspace_id for audience in audiences}
    schemas = {ws: workspace_schema(session, ws) for ws in sorted(workspaces)}
    done: list[RunRow] = []
    unflushed = 0
    for audience in audiences:
        run, stored = _refresh_one(
            session,
            runtime,
            audience,
            state=states[audience.id],
            number=numbers.setdefault(audience.id, 0) + 1,
            schema=schemas[audience.workspace_id],
            trigger=trigger,
            now=now,
        )
        numbers[audience.id] = run.number
        done.append(run)
        unflushed += stored
        if unflushed > FLUSH_BYTES:  # keep memory bounded: the pending bytes go out now
            session.flush()
            unflushed = 0
    run_history.prune_snapshots(session, ids)
    return done


FLUSH_BYTES = 32 << 20
"""Serialized members :func:`refresh_many` holds before it flushes them (at 5M profiles, a dense
set is ~0.6 MB)."""


def _refresh_one(
    session: Session,
    runtime: Runtime,
    audience: AudienceRow,
    *,
    state: Any,
    number: int,
    schema: Schema,
    trigger: str,
    now: datetime | None,
) -> tuple[RunRow, int]:
    """One audience's run (added to the session, not flushed) and the bytes it stored."""
    now = now or utcnow()
    # The run is inserted once, finished: no one outside this transaction could see it running.
    run = run_history.start(audience, number=number, trigger=trigger, now=now)
    try:
        rule = bound_rule(audience.rule or "", schema)
        members = select_members(
            session, runtime=runtime, workspace_id=audience.workspace_id, rule=rule, now=now
        )
    except AudiencesError as exc:
        run_history.finish(run, state, status="failed", error=exc.detail)
        session.add(run)
        return run, 0
    # Finished before ``replace``, and no flush until later: the state's status goes out in the
    # same UPDATE as the members, and the run in one INSERT once its snapshot is set.
    run_history.finish(run, state, status="succeeded", error=None)
    with session.no_autoflush:
        change = memberships.replace(
            session,
            audience=audience,
            members=members,
            cache=runtime.bitmaps,
            cause=f"run:{run.id}",
        )
    run.size, run.entered, run.exited = len(members), len(change.entered), len(change.exited)
    # ``replace`` has just stored the members' bytes on the state row (the same locked object):
    # the run's snapshot shares them instead of serializing the set a second time. A set that
    # did not change keeps its stored base, which is not read back: serialized here.
    run.members = memberships.written_base(state) or serialize(members)
    run.members_kept = True
    session.add(run)
    return run, len(run.members or b"")


def refresh_all(
    session: Session, *, runtime: Runtime, workspace_id: str, trigger: str
) -> list[RunRow]:
    """Evaluate every live dynamic audience of a workspace, each after those it depends on
    (inactive and archived ones keep their members)."""
    dynamic = [a for a in _dynamic(session, workspace_id) if not lifecycle.parked(a)]
    by_key = {audience.key: audience for audience in dynamic}
    graph = {a.key: [k for k in a.dependencies if k in by_key] for a in dynamic}
    order = [by_key[key] for key in rules.evaluation_order(graph) if key in by_key]
    return refresh_many(session, runtime=runtime, audiences=order, trigger=trigger)


def select_members(
    session: Session, *, runtime: Runtime, workspace_id: str, rule: rules.Rule, now: datetime
) -> BitMap:
    """The profiles a bound rule holds for now, computed on the engine (nothing stored)."""
    compiled = compiled_sql(rule, frozen_schema(rule.schema, rule.events), dialect_of(runtime))
    sets = member_sets(session, runtime, workspace_id) if compiled.aliases else {}
    joined = {alias: sets.get(key, BitMap()) for key, alias in compiled.aliases.items()}
    if compiled.where is None:  # reads the clock, on an engine without $now: compiled per call
        where = to_engine_sql(rule, dialect_of(runtime), compiled.aliases, now=now)
        return runtime.profiles.select_pids(workspace_id, where, memberships=joined)
    params = {rules.NOW_PARAMETER: now} if compiled.reads_clock else {}
    return runtime.profiles.select_pids(workspace_id, compiled.where, params, memberships=joined)


def _dynamic(session: Session, workspace_id: str) -> list[AudienceRow]:
    stmt = select(AudienceRow).where(
        AudienceRow.workspace_id == workspace_id,
        AudienceRow.kind == "dynamic",
        AudienceRow.rule.is_not(None),
    )
    return list(session.scalars(stmt))


def _last_numbers(session: Session, audience_ids: list[str]) -> dict[str, int]:
    """The number of each audience's last run (audiences without runs are absent)."""
    rows = session.execute(
        select(RunRow.audience_id, func.max(RunRow.number))
        .where(RunRow.audience_id.in_(audience_ids))
        .group_by(RunRow.audience_id)
    )
    return {audience_id: number for audience_id, number in rows}
