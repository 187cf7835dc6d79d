"""Behavioural conditions: canonical text and JSON round trips, validation, evaluation mode."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audiences.errors import RuleError
from audiences.rules import (
    evaluation_mode,
    explain,
    parse_rule,
    parse_rule_json,
    reads_clock,
    to_json,
    to_predicate,
    to_predicates,
    validate_rule,
)
from tests.rules import event_generators as gen
from tests.rules.helpers import assert_round_trip


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(text=gen.behavioural_rules())
def test_text_and_json_round_trip(text: str) -> None:
    rule = assert_round_trip(text)
    assert parse_rule(rule.text) == rule
    assert parse_rule_json(to_json(rule)).text == rule.text


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (
            {
                "events": {"name": "order", "window": {"last": "30 days"}},
                "op": "gte",
                "value": 3,
            },
            "count(*) FILTER (WHERE event = 'order' AND timestamp >= now() - INTERVAL 30 DAY) >= 3",
        ),
        (
            {
                "events": {
                    "aggregate": "sum",
                    "property": "amount",
                    "name": ["order", "refund"],
                    "where": {"field": "amount", "op": "gt", "value": 0},
                    "window": {"between": ["90 days", "30 days"]},
                },
                "op": "lt",
                "value": 100,
            },
            "sum(amount) FILTER (WHERE event IN ('order', 'refund') AND amount > 0 AND timestamp"
            " BETWEEN now() - INTERVAL 90 DAY AND now() - INTERVAL 30 DAY) < 100",
        ),
        (
            {"events": {"aggregate": "min", "property": "timestamp"}, "op": "gte", "ago": "7 days"},
            "min(timestamp) >= now() - INTERVAL 7 DAY",
        ),
        (
            {
                "sequence": {
                    "steps": [
                        {"field": "event", "op": "equals", "value": "pricing_viewed"},
                        {"field": "event", "op": "equals", "value": "signed_up"},
                    ],
                    "within": "7 days",
                    "window": {"from": "2026-01-01T00:00:00Z"},
                }
            },
            "sequence(event = 'pricing_viewed', event = 'signed_up', within => INTERVAL 7 DAY)"
            " FILTER (WHERE timestamp >= TIMESTAMP '2026-01-01 00:00:00+00:00')",
        ),
    ],
)
def test_json_conditions_read_as_their_text(data: dict[str, Any], text: str) -> None:
    rule = parse_rule_json(data)
    assert rule.text == text
    assert to_json(parse_rule(text))["events" if "events" in data else "sequence"]


SCHEMA = {"age": gen.T.INTEGER, "plan": gen.T.STRING}


@pytest.mark.parametrize(
    ("text", "code", "start"),
    [
        ("sum(*) > 1", "rule_bad_aggregate", 0),
        ("age > 1 AND sum(sku) > 1", "rule_bad_aggregate", 12),
        ("count(DISTINCT *) > 1", "rule_bad_aggregate", 0),
        ("count(*) FILTER (WHERE amout > 1) > 1", "rule_unknown_property", 23),
        ("count(*) FILTER (WHERE age > 1) > 1", "rule_attribute_in_aggregate", 23),
        ("sum(amount) FILTER (WHERE sku > 1) > 1", "rule_type_mismatch", 26),
        ("count(sum(amount)) > 1", "rule_nested_aggregate", 6),
        ("count(*) FILTER (WHERE in_audience('x')) > 1", "rule_forbidden", 23),
        (
            "count(*) FILTER (WHERE timestamp > now() - INTERVAL 11 YEAR) > 1",
            "rule_bad_window",
            35,
        ),
        ("count(*) FILTER (WHERE timestamp > now() - INTERVAL -1 DAY) > 1", "rule_bad_window", 35),
        (
            "count(*) FILTER (WHERE timestamp BETWEEN now() - INTERVAL 1 DAY"
            " AND now() - INTERVAL 9 DAY) > 1",
            "rule_bad_window",
            23,
        ),
        ("sequence(event = 'a', event = 'b', within => INTERVAL 0 DAY)", "rule_bad_window", 0),
        (
            "sequence(" + ", ".join(f"event = '{n}'" for n in range(9)) + ")",
            "rule_too_many_steps",
            113,
        ),
        ("sequence(event = 'a')", "rule_bad_aggregate", 0),
        ("count(*) FILTER (WHERE amount) > 1", "rule_type_mismatch", 23),
        ("count(*) FILTER (WHERE event = 'order')", "rule_type_mismatch", 0),
    ],
)
def test_problems_have_codes_and_positions(text: str, code: str, start: int) -> None:
    with pytest.raises(RuleError) as caught:
        validate_rule(text, SCHEMA, events=gen.EVENTS)
    found = [(e.code, e.start) for e in caught.value.errors]
    assert (code, start) in found, found


def test_unknown_event_names_are_warnings() -> None:
    rule = validate_rule("count(*) FILTER (WHERE event = 'ordr') > 0", SCHEMA, events=gen.EVENTS)
    (warning,) = rule.warnings
    assert (warning.code, warning.start, warning.end) == ("rule_unknown_event", 31, 37)
    assert warning.suggestion == "order"
    assert validate_rule("count(*) > 0", SCHEMA, events=gen.EVENTS).warnings == ()


STREAMS = "follows each event write"


@pytest.mark.parametrize(
    ("text", "mode", "reason"),
    [
        ("count(*) FILTER (WHERE timestamp >= now() - INTERVAL 7 DAY) > 0", "streaming", STREAMS),
        ("count(*) > 0 AND age > 3", "streaming", STREAMS),
        ("max(timestamp) < now() - INTERVAL 30 DAY", "streaming", STREAMS),
        (
            "min(timestamp) FILTER (WHERE event = 'order') >= now() - INTERVAL 7 DAY",
            "streaming",
            STREAMS,
        ),
        (
            "sum(amount) FILTER (WHERE timestamp BETWEEN now() - INTERVAL 90 DAY"
            " AND now() - INTERVAL 30 DAY) > 5",
            "streaming",
            STREAMS,
        ),
        (
            "count(DISTINCT sku) FILTER (WHERE timestamp + INTERVAL 2 HOUR > now()) >= 2",
            "streaming",
            STREAMS,
        ),
        ("last(sku) = 'a' AND NOT in_audience('s')", "streaming", STREAMS),
        ("sequence(event = 'a', event = 'b')", "scheduled", "sequence"),
        (
            "count(*) FILTER (WHERE timestamp >= TIMESTAMP '2024-01-01') > 0",
            "scheduled",
            "absolute window",
        ),
        (
            "count(*) FILTER (WHERE timestamp >= now() - INTERVAL 1 MONTH) > 0",
            "scheduled",
            "calendar",
        ),
        ("max(timestamp) < current_date", "scheduled", "calendar"),
        (
            "sum(amount) > 0 AND signup < now() - INTERVAL 1 DAY",
            "scheduled",
            "current time (now())",
        ),
        ("count(*) > 0 AND in_audience('b')", "scheduled", "on a schedule: b"),
        ("count(*) FILTER (WHERE sent_at > now()) > 0", "scheduled", "calendar"),
    ],
)
def test_behavioural_rules_are_classified_with_a_reason(text: str, mode: str, reason: str) -> None:
    found, why = evaluation_mode(parse_rule(text), {"s"})
    assert (found, reason in why) == (mode, True), why


def test_relative_windows_read_the_clock() -> None:
    assert reads_clock(parse_rule("count(*) FILTER (WHERE timestamp > now()) > 0"))
    assert not reads_clock(parse_rule("count(*) > 0"))


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    texts=st.lists(gen.behavioural_rules(), min_size=2, max_size=4),
    profiles=gen.batches(6),
)
def test_a_rule_set_answers_as_its_rules_one_by_one(
    texts: list[str], profiles: list[dict[str, Any]]
) -> None:
    rules = {
        f"r{i}": validate_rule(text, gen.ATTRIBUTES, events=gen.EVENTS)
        for i, text in enumerate(texts)
    }
    answers = to_predicates(rules, clock=lambda: gen.NOW)
    singles = [to_predicate(rule, clock=lambda: gen.NOW) for rule in rules.values()]
    for profile in profiles:
        assert answers(profile) == tuple(single(profile) for single in singles), texts
        for rule in rules.values():
            explained = explain(rule, profile, now=gen.NOW)
            assert explained["member"] is to_predicate(rule, clock=lambda: gen.NOW)(profile)
