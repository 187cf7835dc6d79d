"""Compiled rules, cached: a stored rule bound to its workspace's schema, its engine SQL (the
time a parameter), and sets of rules compiled into one Python function.

Predicates see a profile as its attributes plus two keys no attribute can have (NUL is refused
in every name): its pid and an ``in_audience`` answerer, so compiled predicates stay pure and
are cached by rule text and schema. Rules compiled together answer the audiences of the set
themselves; a set asking about no other audience reads the bare attributes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from pyroaring import AbstractBitMap
from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlglot import exp

from audiences import rules
from audiences.errors import AudiencesError
from audiences.kit.clock import utcnow
from audiences.rules.to_sql import Dialect
from audiences.schemas.attributes import AttributeType
from audiences.schemas.events import EventSchema
from audiences.services import attributes, event_properties, memberships
from audiences.services.runtime import Runtime
from audiences.store.tables import AudienceRow

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
"""The reference time a rule that does not read the clock is compiled with (any would do)."""
IN_AUDIENCE = "\x00in_audience"
PID = "\x00pid"
_MOMENT: ContextVar[datetime | None] = ContextVar("audiences_evaluation_moment", default=None)


def clock() -> datetime:
    """The time compiled predicates read: the moment :func:`at` set, else now."""
    moment = _MOMENT.get()
    return utcnow() if moment is None else moment


@contextmanager
def at(moment: datetime | None) -> Iterator[None]:
    """Evaluate compiled predicates as of ``moment`` (now when None) inside the block: a sweep
    evaluates at the end of the period it covers, a write at the time it was received.
    Compiled functions are cached and shared, so the time is read from a context variable
    rather than bound into them."""
    token = _MOMENT.set(moment)
    try:
        yield
    finally:
        _MOMENT.reset(token)


@dataclass(frozen=True)
class CompiledSQL:
    """A bound rule's engine SQL, the same on every run: its time is the ``$now`` parameter."""

    where: str | None
    """The WHERE-SQL, or None for a rule that reads the clock when the engine's dialect has no
    ``$now`` parameter (compiled per run: its text holds the time)."""
    aliases: Mapping[str, str]
    """Audience key -> the alias its member set is joined under."""
    reads_clock: bool


@dataclass(frozen=True)
class Schema:
    """The types rules are bound to, hashable so that bound and compiled rules can be cached by
    them: attribute types and event property types (event names seen only give warnings when a
    rule is saved, so they are left out and a new event name invalidates nothing)."""

    attributes: frozenset[tuple[str, AttributeType]]
    events: frozenset[tuple[str, AttributeType]] = frozenset()


def workspace_schema(session: Session, workspace_id: str) -> Schema:
    """The schema a workspace's stored rules are bound to now."""
    return frozen_schema(
        attributes.schema(session, workspace_id=workspace_id),
        event_properties.schema(session, workspace_id=workspace_id),
    )


def frozen_schema(
    schema: Mapping[str, AttributeType], events: Mapping[str, AttributeType] | None = None
) -> Schema:
    """Attribute and event property types as a cache key."""
    return Schema(frozenset(schema.items()), frozenset((events or {}).items()))


@lru_cache(maxsize=4096)
def compiled_sql(rule: rules.Rule, schema: Schema, dialect: Dialect) -> CompiledSQL:
    # Rules are equal by canonical text, so the key is (text, schema, dialect): all the SQL
    # depends on besides the reference time.
    aliases = {key: f"m_{index}" for index, key in enumerate(sorted(rules.dependencies(rule)))}
    where, reads_clock = None, rules.reads_clock(rule)
    if dialect in rules.PARAMETER_DIALECTS:
        where = to_engine_sql(rule, dialect, aliases, now=None)
    elif not reads_clock:  # the text holds no time: any reference time compiles it
        where = to_engine_sql(rule, dialect, aliases, now=EPOCH)
    return CompiledSQL(where, aliases, reads_clock)


def to_engine_sql(
    rule: rules.Rule, dialect: Dialect, aliases: Mapping[str, str], *, now: datetime | None
) -> str:
    """The rule's WHERE-SQL; with ``now`` None, the time is the ``$now`` parameter. Only
    ever a filter, so compiled ``filter_only``."""
    return rules.to_sql(
        rule,
        dialect,
        column=engine_column,
        audience=lambda key: member_test(aliases[key]),
        now=now,
        now_parameter=now is None,
        filter_only=True,
    )


def bound_rule(text: str, schema: Schema) -> rules.Rule:
    """A stored rule bound to the workspace's schema (cached: rules are immutable)."""
    return _bound(text, schema)


@dataclass(frozen=True)
class CompiledRules:
    """A set of stored rules compiled into one function (``rules.to_predicates``)."""

    answers: Callable[[Mapping[str, Any]], tuple[bool, ...]]
    """``answers(profile)``: each rule's answer, in the order the rules were given."""
    asks: frozenset[str]
    """The audiences outside the set that some rule asks about: when there are any, the profile
    passed must be a view (``view``) that answers them; when not, the bare attributes do."""
    events: bool = False
    """Whether some rule reads the profile's events (``rules.EVENTS_KEY``)."""
    attributes: bool = True
    """Whether some rule reads a profile attribute: when none does, the rules need no more of
    a profile than that it exists."""
    scopes: frozenset[rules.EventScope] | None = None
    """The events the rules can read (``rules.event_scopes``, merged): an event in none of them
    changes no answer. None for every event. Meaningful only when ``events``."""


def compiled_rules(keyed: tuple[tuple[str, str], ...], schema: Schema) -> CompiledRules:
    """Stored rules, ``(audience key, rule text)`` in dependency order, compiled into one
    function (cached by the texts, keys and schema)."""
    return _rules(keyed, schema)


@lru_cache(maxsize=256)
def _rules(keyed: tuple[tuple[str, str], ...], schema: Schema) -> CompiledRules:
    bound = {key: _bound(text, schema) for key, text in keyed}
    behavioural = [rule for rule in bound.values() if rules.is_behavioural(rule.tree)]
    scopes = [scope for rule in behavioural for scope in rules.event_scopes(rule.tree)]
    return CompiledRules(
        rules.to_predicates(bound, audience=hook, clock=clock),
        rules.asked_audiences(bound),
        events=bool(behavioural),
        attributes=any(rules.reads_attributes(rule) for rule in bound.values()),
        scopes=rules.merged_scopes(scopes),
    )


@lru_cache(maxsize=4096)
def _bound(text: str, schema: Schema) -> rules.Rule:
    events = EventSchema(properties=dict(schema.events))
    return rules.validate_rule(text, dict(schema.attributes), events=events)


Answer = Callable[[str, "int | None"], "bool | None"]
"""``answer(audience_key, pid)``: is the profile in that audience (None when unknown)."""


def hook(key: str, profile: Mapping[str, Any]) -> bool | None:
    """The ``in_audience`` hook of compiled predicates: asks the view's answerer."""
    answer: Answer = profile[IN_AUDIENCE]
    return answer(key, profile[PID])


def view(attrs: Mapping[str, Any], pid: int | None, answer: Answer) -> dict[str, Any]:
    """A profile as predicates see it: its attributes, its pid and an answerer."""
    return {**attrs, PID: pid, IN_AUDIENCE: answer}


def answerer(sets: Mapping[str, AbstractBitMap]) -> Answer:
    """An answerer from member sets by audience key."""

    def answer(key: str, pid: int | None) -> bool | None:
        members = sets.get(key)
        return None if members is None or pid is None else pid in members

    return answer


def member_sets(
    session: Session, runtime: Runtime, workspace_id: str, *, keys: Iterable[str] | None = None
) -> dict[str, AbstractBitMap]:
    """The current members of the workspace's audiences (those of ``keys``), by key."""
    stmt = select(AudienceRow.key, AudienceRow.id).where(AudienceRow.workspace_id == workspace_id)
    if keys is not None:
        stmt = stmt.where(AudienceRow.key.in_(list(keys)))
    keyed = session.execute(stmt).all()
    sets = memberships.many(
        session, runtime=runtime, audience_ids=[audience_id for _, audience_id in keyed]
    )
    return {key: sets[audience_id] for key, audience_id in keyed}


def member_test(alias: str) -> exp.Expression:
    """How batch SQL tests membership of the set joined under ``alias``."""
    return exp.column("pid", table=alias, quoted=True).is_(exp.null()).not_()


def engine_column(path: str) -> exp.Expression:
    """How batch SQL reads an attribute: every declared attribute, dotted or not, is one column
    of the profile table (nested objects are flattened to dotted names at ingest)."""
    return exp.column(path, quoted=True)


def dialect_of(runtime: Runtime) -> Dialect:
    """The rule dialect of the runtime's profile engine."""
    dialect = runtime.profiles.dialect
    if dialect not in rules.DIALECTS:
        raise AudiencesError(f"the profile engine speaks {dialect}, which rules do not compile to")
    return dialect
