"""A set of rules compiled into one function answers exactly as the rules' own predicates do."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from audiences.rules import Rule, asked_audiences, to_predicate, to_predicates, validate_rule
from audiences.rules.to_python_set import set_source
from tests.rules import generators as gen
from tests.rules.helpers import NOW, SCHEMA
from tests.rules.test_differential import audience_python

EXAMPLES = max(int(os.environ.get("AUDIENCES_HYPOTHESIS_EXAMPLES", "0")), 300)
RULES = gen.rules()  # built once: building the strategy costs more than drawing from it


def outside(key: str, profile: Any) -> bool | None:
    """Audiences outside the set: the differential test's two, and any other key by pid."""
    if key in ("even", "odd"):
        return audience_python(key, profile)
    return (None, True, False)[(profile["pid"] + len(key)) % 3]


@st.composite
def rule_sets(draw: st.DrawFn) -> dict[str, str]:
    """Up to 6 rules ``k0``, ``k1``, ...: random rules, some repeating an earlier rule's text
    (so tests recur), some naming earlier, later and outside audiences."""
    count = draw(st.integers(1, 6))
    texts: dict[str, str] = {}
    for index in range(count):
        text = draw(RULES)
        if texts and draw(st.booleans()):
            again = draw(st.sampled_from(sorted(texts.values())))
            text = f"({again}) {draw(st.sampled_from(['AND', 'OR']))} ({text})"
        for target in draw(st.lists(st.integers(0, count), max_size=2)):
            if target != index:  # a rule naming itself is a cycle, refused before compiling
                joiner = draw(st.sampled_from(["AND", "OR", "AND NOT", "OR NOT"]))
                text = f"({text}) {joiner} in_audience('k{target}')"
        texts[f"k{index}"] = text
    return texts


def one_by_one(bound: dict[str, Rule]) -> Callable[[dict[str, Any]], tuple[bool, ...]]:
    """Each rule's own predicate, in order, an earlier rule's answer standing for its audience
    (as streaming evaluation gives it), other audiences from ``outside``."""
    answers: dict[str, bool] = {}

    def audience(key: str, p: Any) -> bool | None:
        return answers[key] if key in answers else outside(key, p)

    predicates = {
        key: to_predicate(rule, audience=audience, clock=lambda: gen.NOW)
        for key, rule in bound.items()
    }

    def run(profile: dict[str, Any]) -> tuple[bool, ...]:
        answers.clear()
        for key, predicate in predicates.items():
            answers[key] = predicate(profile)
        return tuple(answers.values())

    return run


@seed(20250611)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(texts=rule_sets(), profiles=gen.profile_batches(30))
def test_the_set_answers_as_each_predicate(
    texts: dict[str, str], profiles: list[dict[str, Any]]
) -> None:
    bound = {key: validate_rule(text, gen.SCHEMA) for key, text in texts.items()}
    answers = to_predicates(bound, audience=outside, clock=lambda: gen.NOW)
    expected = one_by_one(bound)
    for profile in profiles:
        got = answers(profile)
        assert got == expected(profile), (texts, profile, set_source(bound)[0])
        assert all(type(answer) is bool for answer in got)


def compile_set(
    texts: dict[str, str], audience: Callable[[str, Any], bool | None] = outside
) -> tuple[Callable[[dict[str, Any]], tuple[bool, ...]], str]:
    bound = {key: validate_rule(text, SCHEMA) for key, text in texts.items()}
    return to_predicates(bound, audience=audience, clock=lambda: NOW), set_source(bound)[0]


def test_each_attribute_is_read_once_and_a_recurring_test_computed_once() -> None:
    answers, source = compile_set(
        {
            "us": "country = 'US'",
            "us-adults": "country = 'US' AND age >= 18",
            "eu-adults": "country IN ('DE', 'FR') AND age >= 18",
            "eu": "country IN ('FR', 'DE')",
            "recent": "last_seen > TIMESTAMP '2024-05-01 00:00:00+00:00'",
            "recent-eu": "country IN ('DE', 'FR') AND last_seen > TIMESTAMP '2024-05-01'",
        }
    )
    assert source.count("p.get('country')") == 1
    assert source.count("p.get('age')") == 1
    assert source.count("_timestamp(") == 1  # converted once, before the rules
    assert source.count("== 'US'") == 1
    assert source.count(" in _c") == 1  # one IN test, its list one constant
    profile = {"country": "FR", "age": 20, "last_seen": NOW}
    assert answers(profile) == (False, False, True, True, True, True)
    assert answers({}) == (False,) * 6


def test_a_test_only_some_rules_reach_is_not_computed_ahead() -> None:
    """A test behind a short circuit in every rule stays there: computing it ahead could fail
    (a malformed value) where the rules themselves never look at it."""
    texts = {
        "a": "age > 60 AND last_seen > TIMESTAMP '2024-01-01'",
        "b": "age < 10 AND last_seen > TIMESTAMP '2024-01-01'",
    }
    answers, source = compile_set(texts)
    assert source.count("_timestamp(") == 2
    assert answers({"age": 30, "last_seen": "not a time"}) == (False, False)
    with pytest.raises(ValueError, match="isoformat"):
        answers({"age": 70, "last_seen": "not a time"})
    # Once a rule always reads it, every rule reads the value converted ahead.
    answers, source = compile_set({**texts, "c": "last_seen < TIMESTAMP '2000-01-01'"})
    assert source.count("_timestamp(") == 1
    assert answers({"age": 30, "last_seen": NOW}) == (False, False, False)


def test_earlier_audiences_are_local_and_the_others_asked() -> None:
    asked: list[str] = []

    def audience(key: str, profile: Any) -> bool | None:
        asked.append(key)
        return key == "outside"

    texts = {
        "adults": "age >= 18",
        "adult-buyers": "in_audience('adults') AND NOT in_audience('minors')",
        "minors": "NOT in_audience('adults') AND in_audience('outside')",
    }
    answers, _ = compile_set(texts, audience)
    assert answers({"age": 30}) == (True, True, False)
    assert asked == ["minors"]  # a later key goes through the hook, like any other
    asked.clear()
    assert answers({"age": 3}) == (False, False, True)
    assert asked == ["outside"]  # adult-buyers stopped at its first test
    bound = {key: validate_rule(text, SCHEMA) for key, text in texts.items()}
    assert asked_audiences(bound) == {"minors", "outside"}
    assert asked_audiences(dict(list(bound.items())[:1])) == frozenset()


def test_answers_follow_the_mapping_order_and_the_clock_is_read_once() -> None:
    reads: list[int] = []

    def clock() -> Any:
        reads.append(1)
        return NOW

    texts = {
        "seen-today": "last_seen >= now() - INTERVAL 1 DAY",
        "never": "FALSE",
        "old": "last_seen < now() - INTERVAL 1 YEAR",
    }
    bound = {key: validate_rule(text, SCHEMA) for key, text in texts.items()}
    answers = to_predicates(bound, clock=clock)
    assert answers({"last_seen": NOW}) == (True, False, False)
    assert len(reads) == 1
    flipped = to_predicates(dict(reversed(bound.items())), clock=clock)
    assert flipped({"last_seen": NOW}) == (False, False, True)


def test_an_empty_set_answers_nothing() -> None:
    assert to_predicates({})({"age": 1}) == ()
