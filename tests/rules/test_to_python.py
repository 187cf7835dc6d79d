"""Python back end: SQL three-valued logic and the semantics shared with the SQL back end."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest

from audiences.rules import parse_rule, to_predicate, validate_rule
from audiences.rules.to_python import Codegen, compile_function
from tests.rules.helpers import NOW, SCHEMA


def value(text: str, profile: dict[str, Any], **hooks: Any) -> Any:
    """The rule's three-valued result (None for NULL) on a profile."""
    rule = validate_rule(text, SCHEMA)
    gen = Codegen(rule)
    result = compile_function(gen, gen.value(rule.tree), hooks.get("audience"), lambda: NOW)(
        profile
    )
    member = to_predicate(rule, clock=lambda: NOW, **hooks)(profile)
    assert member is (result is True)
    return result


@pytest.mark.parametrize(
    ("text", "profile", "expected"),
    [
        ("age > 30", {}, None),
        ("age > 30 AND plan = 'pro'", {"age": 20}, False),
        ("age > 30 AND plan = 'pro'", {"age": 40}, None),
        ("age > 30 OR plan = 'pro'", {"age": 40}, True),
        ("age > 30 OR plan = 'pro'", {"age": 20}, None),
        ("NOT (age > 30)", {}, None),
        ("NOT churned", {"churned": None}, None),
        ("age IS NULL", {}, True),
        ("plan IN ('a', 'b')", {}, None),
        ("plan NOT IN ('a', 'b')", {"plan": "c"}, True),
        ("age BETWEEN 1 AND 3", {"age": 3}, True),
        ("coalesce(age, 0) = 0", {}, True),
        ("age / 0 > 1", {"age": 5}, None),
        ("age % 3 = -1", {"age": -7}, True),
        ("email LIKE 'a\\%b'", {"email": "a%b"}, True),
        ("email LIKE 'a\\%b'", {"email": "axb"}, False),
        ("email LIKE 'a_c'", {"email": "abc"}, True),
        ("email LIKE 'a%'", {"email": "A"}, False),
        ("email ILIKE 'ä%'", {"email": "Äx"}, False),
        ("email ILIKE 'A%'", {"email": "abc"}, True),
        ("upper(email) = 'ÄBC'", {"email": "äbc"}, False),
        ("length(email) = 2", {"email": "🇺🇸"}, True),
        ("trim(email) = 'a'", {"email": "  a  "}, True),
        ("trim(email) = 'a'", {"email": "\ta"}, False),
        ("plan < 'a'", {"plan": "B"}, True),
        ("list_contains(tags, 'x')", {"tags": []}, False),
        ("list_contains(tags, 'x')", {"tags": None}, None),
        ("list_contains(tags, 'x')", {"tags": ["x", None]}, True),
        ("list_has_any(tags, ['a', 'b'])", {"tags": [None, "b"]}, True),
        ("list_has_all(tags, ['a', 'b'])", {"tags": ["a"]}, False),
        ("list_contains(scores, 1)", {"scores": [1.0]}, True),
        ("regexp_matches(email, 'a.b')", {"email": "xa\nb"}, True),
        ("address.country = 'FR'", {"address": {"country": "FR"}}, True),
        ("address.country = 'FR'", {"address": "FR"}, None),
        ("address.country = 'FR'", {"address.country": "FR"}, True),
        ("extra IS NULL", {"extra": {"a": 1}}, False),
    ],
)
def test_three_valued_semantics(text: str, profile: dict[str, Any], expected: Any) -> None:
    assert value(text, profile) == expected


def test_time() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert value("last_seen > now() - INTERVAL 1 DAY", {"last_seen": NOW - timedelta(hours=23)})
    assert value("last_seen = TIMESTAMP '2024-05-31 14:00:00+02:00'", {"last_seen": NOW}) is True
    naive, text = datetime(2024, 5, 31, 12), "2024-05-31T14:00:00+02:00"
    assert value("last_seen = now()", {"last_seen": naive}) is True
    assert value("last_seen = now()", {"last_seen": text}) is True
    assert (
        value(
            "extract(day from last_seen) = 1",
            {"last_seen": datetime(2024, 6, 1, 1, tzinfo=plus_two)},
        )
        is False
    )
    assert (
        value("birthday + INTERVAL 1 MONTH = DATE '2024-02-29'", {"birthday": date(2024, 1, 31)})
        is True
    )
    assert value("birthday < last_seen", {"birthday": date(2024, 5, 31), "last_seen": NOW}) is True
    assert value("date_diff('day', birthday, now()) = 1", {"birthday": date(2024, 5, 30)}) is True
    assert value("birthday = current_date", {"birthday": NOW.date()}) is True
    assert value("extract(dow from birthday) = 0", {"birthday": date(2024, 6, 2)}) is True


def test_in_audience_calls_the_hook() -> None:
    seen: list[tuple[str, Any]] = []

    def hook(key: str, profile: Any) -> bool | None:
        seen.append((key, profile["pid"]))
        return {"a": True, "b": None}.get(key, False)

    assert value("in_audience('a') AND NOT in_audience('c')", {"pid": 1}, audience=hook) is True
    assert value("in_audience('b')", {"pid": 2}, audience=hook) is None
    assert ("a", 1) in seen and ("b", 2) in seen


def test_in_audience_without_a_hook_is_an_error() -> None:
    with pytest.raises(ValueError, match="needs an `audience` hook"):
        to_predicate(parse_rule("in_audience('a')"))({})


def test_the_clock_is_read_at_call_time() -> None:
    moments = iter([NOW, NOW + timedelta(days=2)])
    member = to_predicate(
        validate_rule("last_seen > now() - INTERVAL 1 DAY", SCHEMA), clock=lambda: next(moments)
    )
    profile = {"last_seen": NOW}
    assert [member(profile), member(profile)] == [True, False]


def test_constant_lists_are_frozensets_and_and_short_circuits() -> None:
    rule = parse_rule("plan IN ('a', 'b') AND frob = 1")
    gen = Codegen(rule)
    code = gen.truth(rule.tree)
    assert code == "((p.get('plan') in _c0) and (p.get('frob') == 1))"
    assert gen.names["_c0"] == frozenset({"a", "b"})
    calls: list[str] = []

    class Spy(dict[str, Any]):
        def get(self, key: str, default: Any = None) -> Any:
            calls.append(key)
            return super().get(key, default)

    assert to_predicate(rule)(Spy(plan="c")) is False
    assert calls == ["plan"]


def test_timestamps_use_utc_for_calendar_math() -> None:
    tokyo = timezone(timedelta(hours=9))
    moment = datetime(2024, 2, 1, 3, tzinfo=tokyo)  # still January 31st in UTC
    assert value("extract(month from last_seen) = 1", {"last_seen": moment}) is True
    later = {"last_seen": moment, "signed_up": datetime(2024, 2, 29, 18, tzinfo=UTC)}
    assert value("last_seen + INTERVAL 1 MONTH = signed_up", later) is True
    assert value("date_diff('day', last_seen, signed_up) = 29", later) is True
    assert UTC is not None
