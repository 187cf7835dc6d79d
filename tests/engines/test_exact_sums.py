"""``sum`` and ``avg`` of a FLOAT on every engine: the same exact, order-independent value as in
Python (issue #13), checked at the threshold the benchmark found flapping.

The oracle is decimal arithmetic written here: the amounts have two decimals, so their exact
sum and mean are ``Decimal`` sums, and a condition at the threshold is decided on those.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from audiences.engines.base import EventRecord, ProfileEngine
from audiences.rules import EVENTS_KEY, to_predicate, to_sql, validate_rule
from audiences.schemas.attributes import AttributeType
from audiences.schemas.events import Event, EventSchema
from audiences.services.evaluation.compiled import engine_column
from tests.engines.conftest import WS

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PROPERTIES = {"amount": AttributeType.FLOAT, "qty": AttributeType.INTEGER}
EVENTS = EventSchema(PROPERTIES, frozenset({"order", "view"}))
ORDERS = ("61.35", "406.13", "48.59", "83.93")
"""Profile 945415's orders: their decimal mean is exactly 150, their double sum 600 or
600.0000000000001 depending on the order they are added in."""

HISTORIES: dict[str, list[tuple[str, str | None]]] = {
    **{
        f"order{n}": [("order", a) for a in amounts]
        for n, amounts in enumerate(itertools.islice(itertools.permutations(ORDERS), 0, 24, 5))
    },
    "tenths": [("order", "0.1"), ("order", "0.2"), ("view", "5")],
    "none": [("order", None), ("view", "3")],
}
"""Each profile's events, written in this order: the benchmark's orders in five different
orders, 0.1 + 0.2, and orders without an amount (values beyond ±1e12, which ingest refuses,
are tested on tables written directly: tests/rules/test_exact_sums.py)."""

RULES: dict[str, tuple[str, Callable[[Decimal], bool]]] = {
    "avg(amount) FILTER (WHERE event = 'order') > 150": ("avg", lambda v: v > 150),
    "avg(amount) FILTER (WHERE event = 'order') >= 150": ("avg", lambda v: v >= 150),
    "avg(amount) FILTER (WHERE event = 'order') = 150": ("avg", lambda v: v == 150),
    "sum(amount) FILTER (WHERE event = 'order') = 600": ("sum", lambda v: v == 600),
    "sum(amount) FILTER (WHERE event = 'order') < 600": ("sum", lambda v: v < 600),
    "sum(amount) FILTER (WHERE event = 'order') = 0.3": ("sum", lambda v: v == Decimal("0.3")),
    "sum(amount) FILTER (WHERE event = 'order') IS NULL": ("none", lambda v: True),
}
"""Conditions at the thresholds, each with its oracle: the aggregate it reads (``none``: true
where sum has no value) and the test of the exact decimal value."""


def _expected(aggregate: str, test: Callable[[Decimal], bool]) -> set[str]:
    """The profiles whose exact decimal sum or mean of their orders' amounts passes the test:
    the oracle, in decimal arithmetic."""
    members = set()
    for key, history in HISTORIES.items():
        values = [Decimal(a) for name, a in history if name == "order" and a is not None]
        if aggregate == "none":
            member = not values
        else:
            total = sum(values, Decimal(0))
            member = bool(values) and test(total / len(values) if aggregate == "avg" else total)
        if member:
            members.add(key)
    return members


def _records() -> list[EventRecord]:
    return [
        EventRecord(key, name, T0 + timedelta(minutes=index), _properties(amount))
        for key, history in HISTORIES.items()
        for index, (name, amount) in enumerate(history)
    ]


def _properties(amount: str | None) -> dict[str, Any]:
    return {"qty": 1} if amount is None else {"amount": float(amount), "qty": 1}


def test_sums_and_averages_at_the_threshold_match_decimal_arithmetic(
    engine: ProfileEngine,
) -> None:
    engine.ensure_event_properties(WS, PROPERTIES)
    results = engine.write_events(WS, _records())
    assert all(result.ok for result in results)
    keys = {r.pid: record.external_id for r, record in zip(results, _records(), strict=True)}
    profiles: dict[str, dict[str, Any]] = {key: {EVENTS_KEY: []} for key in HISTORIES}
    for r in _records():
        profiles[r.external_id][EVENTS_KEY].append(Event(r.name, r.timestamp, r.properties))
    for text, (aggregate, test) in RULES.items():
        rule = validate_rule(text, {}, events=EVENTS)
        expected = _expected(aggregate, test)
        where = to_sql(rule, engine.dialect, column=engine_column, now=T0)  # type: ignore[arg-type]
        assert {keys[pid] for pid in engine.select_pids(WS, where)} == expected, text
        member = to_predicate(rule)
        held = {key for key, profile in profiles.items() if member(profile)}
        assert held == expected, text


def test_integer_sums_past_64_bits_do_not_wrap(engine: ProfileEngine) -> None:
    """Two INTEGER values near the 64-bit limit sum (and average) past it, exactly, as in
    Python (ClickHouse sums Int64 into Int64 and wrapped around to a negative number)."""
    big = 9_000_000_000_000_000_000
    engine.ensure_event_properties(WS, PROPERTIES)
    records = [EventRecord("big", "order", T0 + timedelta(minutes=m), {"qty": big}) for m in (1, 2)]
    records.append(EventRecord("small", "order", T0, {"qty": -big}))
    results = engine.write_events(WS, records)
    assert all(result.ok for result in results)
    big_pid = results[0].pid
    profile = {EVENTS_KEY: [Event(r.name, r.timestamp, r.properties) for r in records[:2]]}
    for text in (
        "sum(qty) > 0",
        "sum(qty) FILTER (WHERE qty > 0) > 9007199254740992",
        "avg(qty) > 0",
    ):
        rule = validate_rule(text, {}, events=EVENTS)
        where = to_sql(rule, engine.dialect, column=engine_column, now=T0)  # type: ignore[arg-type]
        assert set(engine.select_pids(WS, where)) == {big_pid}, text
        assert to_predicate(rule)(profile), text
