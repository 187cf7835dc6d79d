"""Helpers the generated Python predicates call for behavioural conditions: SQL's aggregates and
the sequence test over one profile's events (``schemas.events.Event``), as the SQL back end
computes them (see ``behaviour_sql``).

``sum`` and ``avg`` of a FLOAT are exact and independent of the order the values are added in
(docs/rules.md, "Sums and averages"): each value becomes a whole number of micro-units
(:func:`micro_units`), those are summed exactly, and the exact sum is rounded to a double once
(:func:`exact_sum`). Doubles added one by one are not: a sum could be 600 in one run and
600.0000000000001 in the next as an engine's threads added the same values in another order,
flipping ``avg(amount) > 150`` with no data changed (issue #13). Every engine's SQL computes
the same numbers (``sql_builders.Spelling.micro_units`` and the two after it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from audiences.rules.behaviour import EVENTS_KEY
from audiences.rules.sql_semantics import Interval, timestamp
from audiences.schemas.events import FLOAT_SUM_LIMIT as FLOAT_SUM_LIMIT
from audiences.schemas.events import Event

Test = Callable[[Event], bool]
Read = Callable[[Event], Any]


def events_of(profile: Mapping[str, Any]) -> Sequence[Event]:
    """A profile's events (none when the key is missing)."""
    found: Sequence[Event] = profile.get(EVENTS_KEY) or ()
    return found


def time_of(event: Event) -> datetime:
    """An event's time as an aware UTC datetime."""
    moment = timestamp(event.timestamp)
    assert moment is not None
    return moment


def count(events: Sequence[Event], keep: Test) -> int:
    """``count(*)``: the events that pass the filter.

    >>> from datetime import UTC
    >>> count([Event("a", datetime(2024, 1, 1, tzinfo=UTC))], lambda q: q.name == "a")
    1
    """
    return sum(1 for event in events if keep(event))


def values(events: Sequence[Event], keep: Test, read: Read) -> list[Any]:
    """The non-NULL values of the argument over the events that pass the filter."""
    return [v for event in events if keep(event) and (v := read(event)) is not None]


def last(events: Sequence[Event], keep: Test, read: Read) -> Any:
    """``last(p)``: the value of the latest event that has one (ties: the greatest value)."""
    best: tuple[datetime, Any] | None = None
    for event in events:
        if keep(event) and (value := read(event)) is not None:
            key = (time_of(event), value)
            if best is None or key > best:
                best = key
    return None if best is None else best[1]


def matching(events: Sequence[Event], keep: Test, read: Read) -> list[Event]:
    """The events an aggregate counts: those that pass the filter and have a value."""
    return [event for event in events if keep(event) and read(event) is not None]


MICRO = 1e6
"""Micro-units per unit: FLOAT values are summed as whole numbers of millionths."""


def micro_units(value: float | None) -> int | None:
    """A FLOAT value as a whole number of micro-units, ``floor(value * 1e6 + 0.5)`` in double
    arithmetic (one multiply, one add, as every engine computes it); None for NULL and for a
    value beyond :data:`FLOAT_SUM_LIMIT`.

    >>> micro_units(61.35), micro_units(-0.0000005), micro_units(2e12)
    (61350000, 0, None)
    """
    if value is None or not abs(value) <= FLOAT_SUM_LIMIT:
        return None
    return math.floor(value * MICRO + 0.5)


def exact_sum(units: list[int]) -> float:
    """The sum of FLOAT values from their micro-units: the exact integer sum rounded once to the
    nearest double (ties to even), divided by a million.

    >>> exact_sum([micro_units(v) for v in (61.35, 406.13, 48.59, 83.93)])
    600.0
    """
    return float(sum(units)) / MICRO


def _average(found: list[Any]) -> float:
    total: float = sum(found)
    return total / len(found)


REDUCE: dict[str, Callable[[list[Any]], Any]] = {
    "count": len,
    "count_distinct": lambda found: len(set(found)),
    "sum": sum,
    "avg": _average,
    "exact_sum": exact_sum,
    "exact_avg": lambda found: exact_sum(found) / len(found),
    "min": min,
    "max": max,
}
"""How each aggregate reduces the non-NULL values (NULL when there are none, but counts).
``exact_sum``/``exact_avg`` are ``sum``/``avg`` of a FLOAT, over its :func:`micro_units`."""

EXACT = {"sum": "exact_sum", "avg": "exact_avg"}
"""The reduction ``sum`` and ``avg`` of a FLOAT use, by aggregate name."""


def aggregate(name: str, events: Sequence[Event], keep: Test, read: Read) -> Any:
    """An aggregate of the argument over the events that pass the filter."""
    if name == "last":
        return last(events, keep, read)
    found = values(events, keep, read)
    if not found and not name.startswith("count"):
        return None
    return REDUCE[name](found)


def sequence(
    events: Sequence[Event], steps: Sequence[Test], within: Interval | None, keep: Test
) -> bool:
    """Whether events match the steps in strictly increasing time, each within ``within`` of
    the one before (when given), every one passing the filter."""
    ordered = sorted((event for event in events if keep(event)), key=time_of)
    if within is None:
        # The earliest match of each step leaves the most room for the next one.
        reached, done = None, 0
        for event in ordered:
            moment = time_of(event)
            if (reached is None or moment > reached) and steps[done](event):
                reached, done = moment, done + 1
                if done == len(steps):
                    return True
        return False
    reach = [time_of(event) for event in ordered if steps[0](event)]
    for step in steps[1:]:
        reach = [
            moment
            for moment, event in ((time_of(event), event) for event in ordered)
            if step(event) and any(before < moment <= before + within for before in reach)
        ]
    return bool(reach)
