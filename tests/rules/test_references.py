"""Dependencies, evaluation mode with a reason, cycles and evaluation order."""

from __future__ import annotations

import pytest

from audiences.errors import RuleError
from audiences.rules import dependencies, evaluation_mode, evaluation_order, find_cycle, parse_rule


def test_dependencies() -> None:
    rule = parse_rule("in_audience('a') AND (NOT in_audience('b') OR in_audience('a'))")
    assert dependencies(rule) == frozenset({"a", "b"})
    assert dependencies(parse_rule("age > 1")) == frozenset()


@pytest.mark.parametrize(
    ("text", "streaming", "mode", "reason"),
    [
        ("age > 1", set(), "streaming", "it depends only on the profile's own attributes"),
        (
            "in_audience('s')",
            {"s"},
            "streaming",
            "it depends only on profile attributes and streaming audiences",
        ),
        (
            "in_audience('s') OR in_audience('b')",
            {"s"},
            "scheduled",
            "it depends on audiences evaluated on a schedule: b",
        ),
        (
            "birthday = current_date",
            set(),
            "scheduled",
            "it depends on the current time (current_date), so its answer changes as time passes",
        ),
    ],
)
def test_evaluation_mode(text: str, streaming: set[str], mode: str, reason: str) -> None:
    assert evaluation_mode(parse_rule(text), streaming) == (mode, reason)


def test_cycles() -> None:
    assert find_cycle({"a": ["b"], "b": ["c"], "c": []}) is None
    assert find_cycle({"a": ["a"]}) == ["a", "a"]
    assert find_cycle({"x": ["y"], "y": ["z"], "z": ["y"]}) == ["y", "z", "y"]
    chain = {f"n{i}": [f"n{i + 1}"] for i in range(5000)}
    assert find_cycle(chain) is None
    chain["n5000"] = ["n0"]
    assert len(find_cycle(chain) or []) == 5002


def test_evaluation_order() -> None:
    graph = {"lapsed": ["vip", "buyers"], "vip": ["buyers"], "buyers": [], "solo": []}
    assert evaluation_order(graph) == ["buyers", "solo", "vip", "lapsed"]
    assert evaluation_order({"a": ["external"]}) == ["external", "a"]
    with pytest.raises(RuleError) as caught:
        evaluation_order({"a": ["b"], "b": ["a"]})
    assert caught.value.errors[0].code == "rule_cycle"
    assert caught.value.errors[0].location == ("a", "b", "a")
