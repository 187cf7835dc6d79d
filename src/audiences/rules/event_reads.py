"""Which of a profile's events a rule can read: streaming reads only those.

Every behavioural condition reads only the events that pass its ``FILTER (WHERE ...)``: an
aggregate counts or reduces those, a sequence matches its steps among those. A filter that
requires ``event = 'order'`` (or ``event IN (...)``) and ``timestamp >= now() - INTERVAL 30
DAY`` gives the condition's scope: those names, events at most 30 days old. An event in no
condition's scope changes no answer, so streaming evaluation need not read it from the engine.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import NamedTuple

from sqlglot import exp

from audiences.rules.dialect import Aggregate, EventField, EventSequence
from audiences.rules.next_change import shifted


class EventScope(NamedTuple):
    """The events one behavioural condition can read: those named in ``names`` (any name when
    None) and timed at or after ``now - lookback`` (any time when None)."""

    names: frozenset[str] | None
    lookback: timedelta | None


def event_scopes(tree: exp.Expr) -> frozenset[EventScope]:
    """The scope of each behavioural condition of a rule (none when it reads no events).

    >>> from audiences.rules import parse_rule
    >>> rule = parse_rule(
    ...     "count(*) FILTER (WHERE event = 'order' AND timestamp >= now() - INTERVAL 2 DAY) > 0"
    ...     " OR max(timestamp) FILTER (WHERE event IN ('a', 'b')) < now()"
    ... )
    >>> sorted((sorted(s.names or ()), s.lookback) for s in event_scopes(rule.tree))
    [(['a', 'b'], None), (['order'], datetime.timedelta(days=2))]
    """
    found = set()
    for node in tree.find_all(Aggregate, EventSequence):
        where = node.args.get("where")
        if where is None:
            found.add(EventScope(None, None))
            continue
        conjuncts = list(where.flatten()) if isinstance(where, exp.And) else [where]
        backs = [back for c in conjuncts if (back := _lower(c)) is not None]
        found.add(EventScope(_names(where), min(backs) if backs else None))
    return frozenset(found)


def merged_scopes(scopes: Iterable[EventScope]) -> frozenset[EventScope] | None:
    """Scopes that read the same events with fewer tests, or None when one reads every event:
    one scope per set of names (the longest lookback), and none whose events an unnamed scope
    reads already.

    >>> a, b, day, week = frozenset("a"), frozenset("b"), timedelta(days=1), timedelta(days=7)
    >>> found = merged_scopes([EventScope(a, day), EventScope(b, None), EventScope(None, week)])
    >>> [(s.names and sorted(s.names), s.lookback) for s in sorted(found, key=str)]
    [(None, datetime.timedelta(days=7)), (['b'], None)]
    >>> merged_scopes([EventScope(frozenset({"a"}), day), EventScope(None, None)]) is None
    True
    """
    longest: dict[frozenset[str] | None, timedelta | None] = {}
    for names, back in scopes:
        if names in longest:
            known = longest[names]
            back = None if back is None or known is None else max(back, known)
        longest[names] = back
    if None in longest and longest[None] is None:
        return None
    longest.pop(frozenset(), None)  # a filter no event name passes: it reads no event
    anything = longest.get(None)  # what the unnamed scope reads of every name, if there is one
    return frozenset(
        EventScope(names, back)
        for names, back in longest.items()
        if names is None or anything is None or back is None or back > anything
    )


def lookback(tree: exp.Expr) -> timedelta | None:
    """How far back from ``now`` a rule reads events, when every aggregate's filter bounds
    ``timestamp`` from below by ``now()`` minus a fixed interval (``timestamp >= now() -
    INTERVAL 30 DAY``, ``timestamp BETWEEN now() - INTERVAL 90 DAY AND ...``), so events
    before ``now - lookback`` change nothing; None when some aggregate may read any event.

    >>> from audiences.rules import parse_rule
    >>> lookback(parse_rule("count(*) FILTER (WHERE timestamp > now() - INTERVAL 2 DAY) > 0").tree)
    datetime.timedelta(days=2)
    >>> lookback(parse_rule("max(timestamp) < now() - INTERVAL 2 DAY").tree) is None
    True
    """
    backs = [scope.lookback for scope in event_scopes(tree)]
    return None if None in backs else max((b for b in backs if b is not None), default=timedelta(0))


def _lower(node: exp.Expr) -> timedelta | None:
    """``x`` of ``timestamp >= now() - x`` (``>``, ``BETWEEN``, or ``now() - x <= timestamp``)."""
    if isinstance(node, exp.Between):
        time, bound = node.this, node.args["low"]
    elif isinstance(node, exp.GT | exp.GTE):
        time, bound = node.this, node.expression
    elif isinstance(node, exp.LT | exp.LTE):
        time, bound = node.expression, node.this
    else:
        return None
    if not (isinstance(time, EventField) and time.name == "timestamp"):
        return None
    try:
        clock, offset = shifted(bound)
    except ValueError:
        return None
    if not isinstance(clock, exp.CurrentTimestamp) or offset > timedelta(0):
        return None
    return -offset


def _names(node: exp.Expr) -> frozenset[str] | None:
    """The event names an event must have to pass ``node``, or None when any may."""
    if isinstance(node, exp.Paren):
        return _names(node.this)
    if isinstance(node, exp.And):
        sides = (_names(node.this), _names(node.expression))
        known = [names for names in sides if names is not None]
        return frozenset.intersection(*known) if known else None
    if isinstance(node, exp.Or):
        left, right = _names(node.this), _names(node.expression)
        return None if left is None or right is None else left | right
    if isinstance(node, exp.EQ):
        for name, value in ((node.this, node.expression), (node.expression, node.this)):
            if _is_event(name) and _is_text(value):
                return frozenset({value.this})
        return None
    if isinstance(node, exp.In) and _is_event(node.this) and not node.args.get("query"):
        values = node.expressions
        if values and all(_is_text(value) for value in values):
            return frozenset(value.this for value in values)
    return None


def _is_event(node: exp.Expr) -> bool:
    return isinstance(node, EventField) and node.name == "event"


def _is_text(node: exp.Expr) -> bool:
    return isinstance(node, exp.Literal) and node.is_string
