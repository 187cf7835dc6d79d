"""Event scopes: a rule's answer on the events in its scopes is its answer on all of them."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audiences.rules import (
    EVENTS_KEY,
    EventScope,
    event_scopes,
    lookback,
    merged_scopes,
    validate_rule,
)
from audiences.rules.to_python import Codegen, compile_function
from audiences.schemas.events import Event
from tests.rules import event_generators as gen

DAY = timedelta(days=1)


def in_scope(event: Event, scope: EventScope, now: datetime) -> bool:
    names, back = scope
    return (names is None or event.name in names) and (
        back is None or event.timestamp >= now - back
    )


def values(text: str, now: datetime) -> Any:
    """The rule's three-valued value on a profile, as of ``now``."""
    rule = validate_rule(text, gen.ATTRIBUTES, events=gen.EVENTS)
    code = Codegen(rule)
    return compile_function(code, code.value(rule.tree), lambda k, p: None, lambda: now)


def _name_tests() -> st.SearchStrategy[str]:
    name = st.sampled_from(gen.NAMES)
    return st.one_of(
        name.map(lambda n: f"event = '{n}'"),
        name.map(lambda n: f"'{n}' = event"),
        st.lists(name, min_size=1, max_size=3).map(
            lambda ns: "event IN (" + ", ".join(f"'{n}'" for n in ns) + ")"
        ),
        name.map(lambda n: f"event <> '{n}'"),
    )


def _filters() -> st.SearchStrategy[str]:
    """Filters made mostly of event names and windows, under AND and OR."""
    leaf = st.one_of(_name_tests(), gen.windows(), st.sampled_from(["amount >= 10", "coupon"]))
    return st.recursive(
        leaf,
        lambda inner: st.builds(
            lambda a, op, b: f"({a} {op} {b})", inner, st.sampled_from(["AND", "OR"]), inner
        ),
        max_leaves=4,
    )


def scoped_rules() -> st.SearchStrategy[str]:
    """One or two aggregates whose filters name events and windows."""
    one = st.builds(
        lambda aggregate, where: aggregate.format(where),
        st.sampled_from(
            [
                "count(*) FILTER (WHERE {}) >= 1",
                "count(*) FILTER (WHERE {}) >= 2",
                "sum(amount) FILTER (WHERE {}) > 20",
                "max(timestamp) FILTER (WHERE {}) < now() - INTERVAL 1 DAY",
                "last(sku) FILTER (WHERE {}) = 'a'",
            ]
        ),
        _filters(),
    )
    return st.one_of(one, st.builds(lambda a, b: f"{a} OR NOT ({b})", one, one))


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(text=st.one_of(gen.behavioural_rules(), scoped_rules()), profiles=gen.batches(24))
def test_the_events_outside_every_scope_change_no_answer(
    text: str, profiles: list[dict[str, Any]]
) -> None:
    """At every time the histories' events sit on bounds of (``NOW`` moved by each shift)."""
    scopes = event_scopes(validate_rule(text, gen.ATTRIBUTES, events=gen.EVENTS).tree)
    merged = merged_scopes(scopes)
    for now in (gen.NOW + shift for shift in gen.SHIFTS):
        value = values(text, now)
        for profile in profiles:
            events = profile[EVENTS_KEY]
            kept = [e for e in events if any(in_scope(e, scope, now) for scope in scopes)]
            merging = [
                e for e in events if merged is None or any(in_scope(e, s, now) for s in merged)
            ]
            assert merging == kept
            assert value({**profile, EVENTS_KEY: kept}) == value(profile), (text, events, kept)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("count(*) >= 1", {(None, None)}),
        ("count(*) FILTER (WHERE event = 'order') >= 1", {(("order",), None)}),
        ("count(*) FILTER (WHERE 'order' = event AND NOT coupon) >= 1", {(("order",), None)}),
        (
            "sum(amount) FILTER (WHERE event IN ('order', 'cancel')"
            " AND timestamp >= now() - INTERVAL 2 DAY) > 5",
            {(("cancel", "order"), 2 * DAY)},
        ),
        (
            "count(*) FILTER (WHERE (event = 'view' OR event = 'order')"
            " AND timestamp BETWEEN now() - INTERVAL 7 DAY AND now() - INTERVAL 1 DAY) > 0",
            {(("order", "view"), 7 * DAY)},
        ),
        ("count(*) FILTER (WHERE event = 'view' OR amount > 1) > 0", {(None, None)}),
        ("count(*) FILTER (WHERE event <> 'view') > 0", {(None, None)}),
        ("count(*) FILTER (WHERE event = 'view' AND event = 'order') > 0", {((), None)}),
        (
            "max(timestamp) FILTER (WHERE event = 'order') < now() - INTERVAL 60 DAY"
            " OR count(*) FILTER (WHERE timestamp > now() - INTERVAL 1 DAY) >= 1",
            {(("order",), None), (None, DAY)},
        ),
    ],
)
def test_each_condition_reads_the_names_and_window_its_filter_requires(
    text: str, expected: set[tuple[tuple[str, ...] | None, timedelta | None]]
) -> None:
    scopes = event_scopes(validate_rule(text, gen.ATTRIBUTES, events=gen.EVENTS).tree)
    found = {(None if s.names is None else tuple(sorted(s.names)), s.lookback) for s in scopes}
    assert found == expected


def test_merging_keeps_the_longest_window_and_drops_what_an_unnamed_scope_reads() -> None:
    order, view = frozenset({"order"}), frozenset({"view"})
    scopes = [
        EventScope(order, DAY),
        EventScope(order, 3 * DAY),
        EventScope(view, DAY),
        EventScope(None, 2 * DAY),
        EventScope(frozenset(), None),
    ]
    assert merged_scopes(scopes) == {EventScope(order, 3 * DAY), EventScope(None, 2 * DAY)}
    assert merged_scopes([*scopes, EventScope(view, None)]) == {
        EventScope(order, 3 * DAY),
        EventScope(view, None),
        EventScope(None, 2 * DAY),
    }
    assert merged_scopes([*scopes, EventScope(None, None)]) is None
    assert merged_scopes([]) == frozenset()


def test_lookback_is_the_longest_window_of_a_rule_when_every_condition_has_one() -> None:
    def back(text: str) -> timedelta | None:
        return lookback(validate_rule(text, gen.ATTRIBUTES, events=gen.EVENTS).tree)

    assert back("count(*) FILTER (WHERE timestamp >= now() - INTERVAL 2 DAY) > 0") == 2 * DAY
    assert back("age > 3") == timedelta(0)
    assert back("count(*) FILTER (WHERE event = 'order') > 0") is None
    windows = (
        "count(*) FILTER (WHERE timestamp >= now() - INTERVAL 2 DAY) > 0"
        " AND min(amount) FILTER (WHERE timestamp > now() - INTERVAL 5 HOUR"
        " AND timestamp > now() - INTERVAL 7 DAY) > 1"
    )
    assert back(windows) == 2 * DAY
