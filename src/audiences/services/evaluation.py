"""Evaluation in its three modes, all through the rule language's back ends.

- batch: the rule compiled to the engine's SQL and run where the data is; the member set
  replaces the audience's membership and the run records who entered and who exited;
- streaming: when profiles are written, every streaming audience's rule runs on them (all
  compiled into one Python function) and the memberships change before the write returns;
- synchronous: which audiences one profile (stored or not) would be in, and why.

Predicates see a profile as its attributes plus two keys no attribute can have (NUL is refused
in every name): its pid and an ``in_audience`` answerer, so compiled predicates stay pure and
are cached by rule text and schema. Rules compiled together answer the audiences of the set
themselves; a set asking about no other audience reads the bare attributes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

import numpy as np
from pyroaring import AbstractBitMap, BitMap
from sqlalchemy import func, select
from sqlalchemy.orm import Session, lazyload, load_only
from sqlglot import exp

from audiences import rules
from audiences.engines.base import Profile, pids_to_bitmap
from audiences.errors import AudiencesError, Conflict
from audiences.kit.clock import utcnow
from audiences.rules.to_sql import Dialect
from audiences.schemas.attributes import AttributeType
from audiences.services import (
    attributes,
    definitions,
    lifecycle,
    memberships,
    run_history,
    static_members,
)
from audiences.services.runtime import Runtime
from audiences.store.tables import AudienceRow, RunRow

IN_AUDIENCE = "\x00in_audience"
PID = "\x00pid"


def refresh(session: Session, *, runtime: Runtime, audience: AudienceRow, trigger: str) -> RunRow:
    """Evaluate a dynamic audience on the engine now and record the run.

    A failing run (an engine error, a rule that no longer validates) is recorded as failed with
    the message, and the previous membership stays served. An inactive or archived audience is
    not evaluated (409, see :mod:`audiences.services.lifecycle`).
    """
    lifecycle.require(audience, lifecycle.Action.REFRESH)
    if audience.kind == "static":
        # A static audience is not evaluated: its refresh lets members past ttl_days go.
        return static_members.expire(session, audience=audience, trigger=trigger)
    return refresh_many(session, runtime=runtime, audiences=[audience], trigger=trigger)[0]


def refresh_many(
    session: Session, *, runtime: Runtime, audiences: Sequence[AudienceRow], trigger: str
) -> list[RunRow]:
    """Evaluate dynamic audiences in the order given (each after those it depends on) and record
    a run for each, as :func:`refresh` does one by one, in the session's transaction.

    What the refreshes share is done once: their membership rows are locked in one statement,
    the schema and the last run numbers read once, and the new memberships and runs go out
    together at the next flush (an audience whose rule asks about another flushes what came
    before it, so it reads the members just computed). A failing run is recorded as failed and
    its audience keeps its previous members; the others are not held back.
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
    schemas = {
        ws: _frozen(attributes.schema(session, workspace_id=ws)) for ws in sorted(workspaces)
    }
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
    schema: frozenset[tuple[str, AttributeType]],
    trigger: str,
) -> tuple[RunRow, int]:
    """One audience's run (added to the session, not flushed) and the bytes it stored."""
    now = utcnow()
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
            session, audience=audience, members=members, cache=runtime.bitmaps
        )
    run.size, run.entered, run.exited = len(members), len(change.entered), len(change.exited)
    # ``replace`` has just stored the members' bytes on the state row (the same locked object):
    # the run's snapshot shares them instead of serializing the set a second time.
    run.members = state.bitmap
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


def on_profiles_written(
    session: Session,
    *,
    runtime: Runtime,
    workspace_id: str,
    pids: Iterable[int],
    written: Mapping[int, Profile] | None = None,
    streaming: list[AudienceRow] | None = None,
) -> None:
    """Re-evaluate every streaming audience on these profiles (deleted ones leave them all).

    ``written`` are the profiles as this transaction wrote them, by pid, used instead of
    reading them back; pass them, with the ``streaming`` audiences it returned, only when
    :func:`lock_streaming` ran before the write.
    """
    if streaming is None:
        streaming = streaming_audiences(session, workspace_id)
    wanted = sorted(set(pids))
    if not streaming or not wanted:
        return
    # Lock before reading (in one order, so writers cannot deadlock): of two concurrent writers
    # of a profile, the later to lock reads the later data, so membership ends as the last write
    # says. SQLite serialises writers already; PostgreSQL needs the row locks.
    memberships.lock_all(session, streaming)
    if written is not None and all(pid in written for pid in wanted):
        profiles: Sequence[Profile | None] = [written[pid] for pid in wanted]
    else:
        profiles = runtime.profiles.get_profiles_by_pid(workspace_id, wanted)
    views = {
        pid: profile.attributes for pid, profile in zip(wanted, profiles, strict=True) if profile
    }
    schema = attributes.schema(session, workspace_id=workspace_id)
    # Every streaming rule at once, per profile: an audience's rule reads the answers of the
    # streaming audiences before it directly, and only the stored members of the audiences
    # outside the set that some rule asks about (in_audience).
    compiled = compiled_rules(tuple((a.key, a.rule or "") for a in streaming), _frozen(schema))
    check = compiled.answers
    if compiled.asks:
        answer = _answerer(_member_sets(session, runtime, workspace_id, keys=compiled.asks))
        found = {pid: check(_view(attrs, pid, answer)) for pid, attrs in views.items()}
    else:
        found = {pid: check(attrs) for pid, attrs in views.items()}
    # One row of answers per profile; each audience's column picks the pids that enter it.
    evaluated = np.fromiter(found, dtype=np.uint32, count=len(found))
    answers = np.array(list(found.values()), dtype=bool).reshape(len(found), len(streaming))
    everyone = BitMap(wanted)
    for index, audience in enumerate(streaming):
        entering = pids_to_bitmap(evaluated[answers[:, index]])
        memberships.apply(
            session,
            audience=audience,
            add=entering,
            remove=everyone - entering,
            cache=runtime.bitmaps,
        )


def lock_streaming(session: Session, workspace_id: str) -> list[AudienceRow]:
    """Take the membership locks of the workspace's streaming audiences (returned), before a
    profile write whose written rows :func:`on_profiles_written` will use: the later writer to
    lock then also writes later, so the rows it evaluates are the last ones."""
    streaming = streaming_audiences(session, workspace_id)
    memberships.lock_all(session, streaming)
    return streaming


def streaming_audiences(session: Session, workspace_id: str) -> list[AudienceRow]:
    """Live dynamic audiences kept current on every write, each after those it depends on."""
    keyed = _streaming_ids(tuple(definitions.graph(session, workspace_id)))
    if not keyed:
        return []
    stmt = (
        select(AudienceRow)
        .where(AudienceRow.id.in_(keyed))
        # Only what evaluating and writing membership read; the rest loads if touched.
        .options(
            lazyload(AudienceRow.label_rows),
            load_only(
                AudienceRow.workspace_id,
                AudienceRow.key,
                AudienceRow.kind,
                AudienceRow.rule,
                AudienceRow.refresh_mode,
                AudienceRow.dependencies,
            ),
        )
    )
    found = {audience.id: audience for audience in session.scalars(stmt)}
    return [found[audience_id] for audience_id in keyed if audience_id in found]


@lru_cache(maxsize=256)
def _streaming_ids(nodes: tuple[definitions.Node, ...]) -> tuple[str, ...]:
    """The ids of a graph's streaming audiences in dependency order (cached: the graph of a
    workspace changes far less often than its profiles are written)."""
    modes = definitions.modes(nodes)
    # A parked audience is not evaluated; those whose rules read it read its last members.
    candidates = {
        n.key: n
        for n in nodes
        if n.kind == "dynamic"
        and not lifecycle.parked(n)
        and n.rule is not None
        and n.refresh_mode == "streaming"
        and n.key in modes
        and modes[n.key].mode == "streaming"
    }
    graph = {key: [k for k in n.dependencies if k in candidates] for key, n in candidates.items()}
    return tuple(candidates[key].id for key in rules.evaluation_order(graph) if key in candidates)


@dataclass(frozen=True)
class Verdict:
    """One audience's answer for one profile, with the explanation when asked for."""

    audience: AudienceRow
    member: bool
    explanation: dict[str, Any] | None


def evaluate_profile(
    session: Session,
    *,
    runtime: Runtime,
    workspace_id: str,
    attributes_: Mapping[str, Any],
    pid: int | None,
    explain: bool,
    now: datetime | None = None,
) -> list[Verdict]:
    """Which audiences a profile would be in now, storing nothing.

    Dynamic audiences are evaluated on the given attributes in dependency order; static and
    external ones answer from their stored membership (a profile not stored is in none).
    """
    moment = now or utcnow()
    schema = _frozen(attributes.schema(session, workspace_id=workspace_id))
    every = list(
        session.scalars(select(AudienceRow).where(AudienceRow.workspace_id == workspace_id))
    )
    stored = memberships.many(session, runtime=runtime, audience_ids=[a.id for a in every])
    answers: dict[str, bool] = {
        a.key: pid is not None and pid in stored[a.id] for a in every if a.kind != "dynamic"
    }
    dynamic = {a.key: a for a in every if a.kind == "dynamic" and a.rule}
    graph = {key: [k for k in a.dependencies if k in dynamic] for key, a in dynamic.items()}
    verdicts = [Verdict(a, answers[a.key], None) for a in every if a.kind != "dynamic"]
    view = _view(attributes_, pid, lambda key, _pid: answers.get(key))
    order = rules.evaluation_order(graph)
    members = compiled_rules(tuple((key, dynamic[key].rule or "") for key in order), schema)
    answers.update(zip(order, members.answers(view), strict=True))
    for key in order:
        audience = dynamic[key]
        detail = None
        if explain:
            rule = bound_rule(audience.rule or "", schema)
            detail = rules.explain(rule, view, audience=_hook, now=moment)
        verdicts.append(Verdict(audience, answers[key], detail))
    return verdicts


def explain_member(
    session: Session,
    *,
    runtime: Runtime,
    audience: AudienceRow,
    attributes_: Mapping[str, Any],
    pid: int | None,
) -> dict[str, Any] | None:
    """Why a profile is (not) in a dynamic audience by its rule now; None for other kinds."""
    if audience.kind != "dynamic" or not audience.rule:
        return None
    for verdict in evaluate_profile(
        session,
        runtime=runtime,
        workspace_id=audience.workspace_id,
        attributes_=attributes_,
        pid=pid,
        explain=True,
    ):
        if verdict.audience.id == audience.id:
            return verdict.explanation
    return None


def select_members(
    session: Session, *, runtime: Runtime, workspace_id: str, rule: rules.Rule, now: datetime
) -> BitMap:
    """The profiles a bound rule holds for now, computed on the engine (nothing stored)."""
    compiled = _compiled(rule, _frozen(rule.schema), _dialect(runtime))
    sets = _member_sets(session, runtime, workspace_id) if compiled.aliases else {}
    joined = {alias: sets.get(key, BitMap()) for key, alias in compiled.aliases.items()}
    if compiled.where is None:  # an engine without the $now parameter: compiled per call
        where = _to_sql(rule, _dialect(runtime), compiled.aliases, now=now)
        return runtime.profiles.select_pids(workspace_id, where, memberships=joined)
    params = {rules.NOW_PARAMETER: now} if compiled.reads_clock else {}
    return runtime.profiles.select_pids(workspace_id, compiled.where, params, memberships=joined)


@dataclass(frozen=True)
class _CompiledSQL:
    """A bound rule's engine SQL, the same on every run: its time is the ``$now`` parameter."""

    where: str | None
    """The WHERE-SQL, or None when the engine's dialect has no ``$now`` parameter."""
    aliases: Mapping[str, str]
    """Audience key -> the alias its member set is joined under."""
    reads_clock: bool


@lru_cache(maxsize=4096)
def _compiled(
    rule: rules.Rule, schema: frozenset[tuple[str, AttributeType]], dialect: Dialect
) -> _CompiledSQL:
    # Rules are equal by canonical text, so the key is (text, schema, dialect): all the SQL
    # depends on besides the reference time.
    aliases = {key: f"m_{index}" for index, key in enumerate(sorted(rules.dependencies(rule)))}
    where = None
    if dialect in rules.PARAMETER_DIALECTS:
        where = _to_sql(rule, dialect, aliases, now=None)
    return _CompiledSQL(where, aliases, rules.reads_clock(rule))


def _to_sql(
    rule: rules.Rule, dialect: Dialect, aliases: Mapping[str, str], *, now: datetime | None
) -> str:
    """The rule's WHERE-SQL; with ``now`` None, the time is the ``$now`` parameter."""
    return rules.to_sql(
        rule,
        dialect,
        column=engine_column,
        audience=lambda key: _member_test(aliases[key]),
        now=now,
        now_parameter=now is None,
    )


def bound_rule(text: str, schema: frozenset[tuple[str, AttributeType]]) -> rules.Rule:
    """A stored rule bound to the workspace's schema (cached: rules are immutable)."""
    return _bound(text, schema)


@dataclass(frozen=True)
class CompiledRules:
    """A set of stored rules compiled into one function (``rules.to_predicates``)."""

    answers: Callable[[Mapping[str, Any]], tuple[bool, ...]]
    """``answers(profile)``: each rule's answer, in the order the rules were given."""
    asks: frozenset[str]
    """The audiences outside the set that some rule asks about: when there are any, the profile
    passed must be a view (``_view``) that answers them; when not, the bare attributes do."""


def compiled_rules(
    keyed: tuple[tuple[str, str], ...], schema: frozenset[tuple[str, AttributeType]]
) -> CompiledRules:
    """Stored rules, ``(audience key, rule text)`` in dependency order, compiled into one
    function (cached by the texts, keys and schema)."""
    return _rules(keyed, schema)


@lru_cache(maxsize=256)
def _rules(
    keyed: tuple[tuple[str, str], ...], schema: frozenset[tuple[str, AttributeType]]
) -> CompiledRules:
    bound = {key: _bound(text, schema) for key, text in keyed}
    return CompiledRules(rules.to_predicates(bound, audience=_hook), rules.asked_audiences(bound))


@lru_cache(maxsize=4096)
def _bound(text: str, schema: frozenset[tuple[str, AttributeType]]) -> rules.Rule:
    return rules.validate_rule(text, dict(schema))


Answer = Callable[[str, "int | None"], "bool | None"]
"""``answer(audience_key, pid)``: is the profile in that audience (None when unknown)."""


def _hook(key: str, profile: Mapping[str, Any]) -> bool | None:
    answer: Answer = profile[IN_AUDIENCE]
    return answer(key, profile[PID])


def _view(attrs: Mapping[str, Any], pid: int | None, answer: Answer) -> dict[str, Any]:
    return {**attrs, PID: pid, IN_AUDIENCE: answer}


def _answerer(sets: Mapping[str, AbstractBitMap]) -> Answer:
    def answer(key: str, pid: int | None) -> bool | None:
        members = sets.get(key)
        return None if members is None or pid is None else pid in members

    return answer


def _frozen(schema: Mapping[str, AttributeType]) -> frozenset[tuple[str, AttributeType]]:
    return frozenset(schema.items())


def _member_sets(
    session: Session, runtime: Runtime, workspace_id: str, *, keys: Iterable[str] | None = None
) -> dict[str, AbstractBitMap]:
    stmt = select(AudienceRow.key, AudienceRow.id).where(AudienceRow.workspace_id == workspace_id)
    if keys is not None:
        stmt = stmt.where(AudienceRow.key.in_(list(keys)))
    keyed = session.execute(stmt).all()
    sets = memberships.many(
        session, runtime=runtime, audience_ids=[audience_id for _, audience_id in keyed]
    )
    return {key: sets[audience_id] for key, audience_id in keyed}


def _member_test(alias: str) -> exp.Expression:
    return exp.column("pid", table=alias, quoted=True).is_(exp.null()).not_()


def engine_column(path: str) -> exp.Expression:
    """How batch SQL reads an attribute: every declared attribute, dotted or not, is one column
    of the profile table (nested objects are flattened to dotted names at ingest)."""
    return exp.column(path, quoted=True)


def _dialect(runtime: Runtime) -> Dialect:
    dialect = runtime.profiles.dialect
    if dialect not in rules.DIALECTS:
        raise AudiencesError(f"the profile engine speaks {dialect}, which rules do not compile to")
    return dialect


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
