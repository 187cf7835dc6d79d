"""When a rule's answer on a profile can next change by time alone (streaming's timer).

A rule that reads the clock compares times with ``now()`` moved by fixed intervals:
``timestamp >= now() - INTERVAL 30 DAY`` inside a filter, ``max(timestamp) < now() - INTERVAL 7
DAY``, ``last_seen > now() - INTERVAL 1 HOUR``. Each such comparison can flip only when ``now``
reaches a data instant ``x`` (an event time, a time-valued property or attribute, a literal)
moved by the comparison's offset, or a microsecond after (the finest time the engines keep):
between those boundaries every comparison, so the whole answer, is constant. The answer is
evaluated at each boundary after ``now`` in order, and the first that differs is the moment.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import date, datetime, timedelta
from typing import Any

from sqlglot import exp

from audiences.rules import sql_semantics
from audiences.rules.dialect import Attr
from audiences.rules.event_semantics import events_of, time_of
from audiences.rules.kinds import TIMES, Kind, attribute_kind, of_attribute
from audiences.rules.literals import NOT_CONSTANT, constant
from audiences.rules.rule import Rule
from audiences.rules.to_python import AudienceCheck, no_audience, to_predicate

TICK = timedelta(microseconds=1)
_COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE)


def next_change(
    rule: Rule,
    profile: Mapping[str, Any],
    now: datetime,
    *,
    audience: AudienceCheck = no_audience,
) -> datetime | None:
    """The first instant after ``now`` at which the rule's answer on the profile differs from
    its answer at ``now`` with nothing but the clock moving, or None if it never does.

    The profile holds its attributes and, under ``EVENTS_KEY``, its events. Raises
    ``ValueError`` for rules that read the clock other than through fixed intervals from
    ``now()`` (``current_date``, month or year intervals, ``now()`` inside a function): those
    change on calendar boundaries, and are evaluated on a schedule.

    >>> from datetime import UTC
    >>> from audiences.rules import EVENTS_KEY, parse_rule
    >>> from audiences.schemas.events import Event
    >>> rule = parse_rule("count(*) FILTER (WHERE timestamp >= now() - INTERVAL 1 DAY) > 0")
    >>> seen = datetime(2024, 5, 1, tzinfo=UTC)
    >>> next_change(rule, {EVENTS_KEY: [Event("view", seen)]}, seen)
    datetime.datetime(2024, 5, 2, 0, 0, 0, 1, tzinfo=datetime.timezone.utc)
    """
    offsets = clock_offsets(rule.tree)
    if not offsets:
        return None
    moment = [now]
    predicate = to_predicate(rule, audience=audience, clock=lambda: moment[0])
    answer = predicate(profile)
    instants = set(_instants(rule, profile))
    boundaries = {x + s + tick for x in instants for s in offsets for tick in (timedelta(0), TICK)}
    for boundary in sorted(b for b in boundaries if b > now):
        moment[0] = boundary
        if predicate(profile) != answer:
            return boundary
    return None


def clock_offsets(tree: exp.Expr) -> set[timedelta]:
    """For every comparison with ``now()``: how far past a data instant ``now`` must be for
    the comparison to flip (``timestamp >= now() - INTERVAL 30 DAY``: 30 days)."""
    handled: set[int] = set()
    offsets: set[timedelta] = set()
    for node in tree.find_all(*_COMPARISONS, exp.Between):
        for clock_side, other in _pairs(node):
            clock, clock_offset = shifted(clock_side)
            base, offset = shifted(other)
            if isinstance(clock, exp.CurrentTimestamp) and not isinstance(
                base, exp.CurrentTimestamp
            ):
                handled.add(id(clock))
                offsets.add(offset - clock_offset)
    for node in tree.find_all(exp.CurrentTimestamp, exp.CurrentDate):
        if id(node) not in handled:
            raise ValueError(f"{node.sql()} is read other than by a fixed interval from now()")
    return offsets


def _pairs(node: exp.Expr) -> Iterator[tuple[exp.Expr, exp.Expr]]:
    if isinstance(node, exp.Between):
        sides = [(node.this, node.args["low"]), (node.this, node.args["high"])]
    else:
        sides = [(node.this, node.expression)]
    for one, other in sides:
        yield one, other
        yield other, one


def shifted(node: exp.Expr) -> tuple[exp.Expr, timedelta]:
    """``x + INTERVAL a - INTERVAL b`` as (x, a - b); months and years are refused
    (``ValueError``: they move by calendar, not by a fixed time)."""
    total = timedelta(0)
    while isinstance(node, exp.Add | exp.Sub) and isinstance(node.expression, exp.Interval):
        interval = constant(node.expression)
        if interval is NOT_CONSTANT or interval.months:
            raise ValueError("month and year intervals move by calendar, not by a fixed time")
        total += interval.span if isinstance(node, exp.Add) else -interval.span
        node = node.this
    return node, total


def _instants(rule: Rule, profile: Mapping[str, Any]) -> Iterator[datetime]:
    """Every instant the rule may compare with the clock: event times, time-valued properties
    and attributes, time literals."""
    timed = {n for n, t in rule.events.items() if of_attribute(t) in TIMES}
    for event in events_of(profile):
        yield time_of(event)
        for name in timed:
            yield from _as_instant(event.properties.get(name))
    for node in rule.tree.find_all(Attr):
        if attribute_kind(node.name, rule.schema) in (Kind.TIMESTAMP, Kind.DATE):
            yield from _as_instant(sql_semantics.dig(profile, tuple(node.name.split("."))))
    for cast in rule.tree.find_all(exp.Cast):
        yield from _as_instant(constant(cast))


def _as_instant(value: Any) -> Iterator[datetime]:
    if isinstance(value, datetime | date | str):
        try:
            moment = sql_semantics.timestamp(value)
        except ValueError:  # text that is no time: the rule reads it as NULL or fails anyway
            return
        if moment is not None:
            yield moment
