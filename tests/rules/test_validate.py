"""Validation against a schema: every problem code, with positions, all collected at once."""

from __future__ import annotations

from typing import Any

import pytest

from audiences.errors import ErrorDetail, RuleError
from audiences.rules import RuleLimits, validate_rule
from tests.rules.helpers import SCHEMA


def problems(rule: Any, limits: RuleLimits = RuleLimits()) -> list[ErrorDetail]:
    with pytest.raises(RuleError) as caught:
        validate_rule(rule, SCHEMA, limits=limits)
    assert caught.value.status == 422
    return caught.value.errors


def only(rule: Any, limits: RuleLimits = RuleLimits()) -> ErrorDetail:
    found = problems(rule, limits)
    assert len(found) == 1, found
    return found[0]


def test_unknown_attribute_with_did_you_mean_and_position() -> None:
    error = only("age > 3 AND contry = 'US'")
    assert error.code == "rule_unknown_attribute"
    assert (error.start, error.end, error.line, error.col) == (12, 18, 1, 13)
    assert error.suggestion == "country"
    assert "Did you mean country?" in error.message


def test_positions_on_later_lines() -> None:
    error = only("age > 3\n  AND plan = 'pro'\n  AND foo = 1")
    assert (error.line, error.col, error.start, error.end) == (3, 7, 33, 36)


def test_every_problem_is_collected() -> None:
    found = problems("contry = 'US' AND age = 'old' AND frob(1) AND lower(1, 2) = 'x'")
    assert [(p.code, p.start) for p in found] == [
        ("rule_unknown_attribute", 0),
        ("rule_type_mismatch", 18),
        ("rule_unknown_function", 34),
        ("rule_wrong_arity", 46),
    ]


@pytest.mark.parametrize(
    ("text", "code", "span", "suggestion"),
    [
        ("age = = 3", "rule_syntax", (6, 7), None),
        ("plan = 'pro", "rule_syntax", (7, 11), None),
        ("age = 'thirty'", "rule_type_mismatch", (0, 14), None),
        ("country + 1 > 2", "rule_type_mismatch", (0, 11), None),
        ("extra = 'x'", "rule_type_mismatch", (0, 11), None),
        ("age", "rule_type_mismatch", (0, 3), None),
        ("lenght(email) > 3", "rule_unknown_function", (0, 6), "length"),
        ("read_parquet('x') IS NULL", "rule_forbidden", (0, 12), None),
        ("starts_with(email)", "rule_wrong_arity", (0, 11), "starts_with(text, prefix)"),
        ("regexp_matches(email, '[a-')", "rule_bad_regex", (22, 27), None),
        ("email LIKE 'abc\\'", "rule_bad_pattern", (11, 17), "abc\\\\"),
        ("age > 1e999", "rule_bad_number", (6, 11), None),
        ("birthday = DATE '2024-02-30'", "rule_bad_literal", (16, 28), None),
        ("last_seen > 'yesterday'", "rule_bad_literal", (12, 23), None),
        ("c\u043euntry = 'US'", "rule_confusable", (0, 7), "country"),
        ("\"c\u043euntry\" = 'US'", "rule_confusable", (0, 9), "country"),
        ("age = 1 \u200b", "rule_bad_character", (8, 9), None),
        ("extract(epoch from last_seen) > 1", "rule_forbidden", (19, 28), None),
        ("date_diff('month', birthday, now()) > 1", "rule_forbidden", (10, 17), "'day'"),
        ("plan IN ('a', NULL)", "rule_forbidden", (0, 12), None),
        ("in_audience(plan)", "rule_forbidden", (0, 11), "in_audience('key')"),
    ],
)
def test_problem_codes(text: str, code: str, span: tuple[int, int], suggestion: str | None) -> None:
    error = only(text)
    assert error.code == code, error
    assert (error.start, error.end) == span, error
    assert error.suggestion == suggestion
    assert error.line == 1 and error.col == span[0] + 1


def test_size_limits() -> None:
    assert only("age = 1", RuleLimits(max_length=3)).code == "rule_too_large"
    assert only("((age = 1))", RuleLimits(max_depth=1)).code == "rule_too_deep"
    assert only("age + age + age > 1", RuleLimits(max_depth=3)).code == "rule_too_deep"
    assert only("age = 1 AND age = 2", RuleLimits(max_nodes=5)).code == "rule_too_large"
    assert only("age IN (1, 2, 3)", RuleLimits(max_list=2)).code == "rule_too_large"


def test_and_chains_count_once_for_depth() -> None:
    text = " AND ".join(["age = 1"] * 40)
    assert validate_rule(text, SCHEMA, limits=RuleLimits(max_depth=4)).text == text


def test_json_problems_carry_json_paths() -> None:
    rule = {
        "all": [
            {"field": "country", "op": "equals", "value": "US"},
            {"field": "contry", "op": "equals", "value": "US"},
            {"any": [{"field": "age", "op": "gte", "value": "old"}]},
        ]
    }
    found = problems(rule)
    assert [(p.code, p.location) for p in found] == [
        ("rule_unknown_attribute", ("all", 1, "field")),
        ("rule_type_mismatch", ("all", 2, "any", 0)),
    ]
    assert found[0].suggestion == "country" and found[0].start is None


@pytest.mark.parametrize(
    ("rule", "code", "location"),
    [
        ({"all": []}, "rule_syntax", ("all",)),
        (
            {"all": [{"field": "age", "op": "bigger", "value": 1}]},
            "rule_unknown_operator",
            ("all", 0, "op"),
        ),
        ({"field": "age", "op": "between", "values": [1]}, "rule_wrong_arity", ("values",)),
        ({"field": "age", "op": "equals"}, "rule_wrong_arity", ()),
        ({"field": "age", "op": "equals", "value": None}, "rule_type_mismatch", ("value",)),
        ({"field": "age", "op": "equals", "value": float("nan")}, "rule_bad_number", ("value",)),
        ({"field": "age", "op": "in", "values": [1, [2]]}, "rule_type_mismatch", ("values", 1)),
        ({"all": [{"expr": "age +"}]}, "rule_syntax", ("all", 0, "expr")),
        ({"all": [{"expr": "read_csv('x')"}]}, "rule_forbidden", ("all", 0, "expr")),
        ([1, 2], "rule_syntax", ()),
    ],
)
def test_json_form_problems(rule: Any, code: str, location: tuple[Any, ...]) -> None:
    found = problems(rule)
    assert (found[0].code, found[0].location) == (code, location), found


def test_hostile_json_is_refused() -> None:
    deep: dict[str, Any] = {"field": "age", "op": "gt", "value": 1}
    for _ in range(100_000):
        deep = {"none": [deep]}
    assert only(deep).code == "rule_too_deep"
    wide = {"any": [{"field": "age", "op": "equals", "value": i} for i in range(10_000)]}
    assert only(wide).code == "rule_too_large"


def test_validation_binds_types_and_types_time_literals() -> None:
    rule = validate_rule(
        "last_seen > '2024-01-01T10:00:00+02:00' AND birthday < '2000-01-01'", SCHEMA
    )
    assert rule.text == (
        "last_seen > TIMESTAMP '2024-01-01 08:00:00+00:00' AND birthday < DATE '2000-01-01'"
    )
    assert rule.schema == {"last_seen": "timestamp", "birthday": "date"}


def test_error_details_render_as_json() -> None:
    error = only("age > 3 AND contry = 'US'")
    assert error.to_dict() == {
        "code": "rule_unknown_attribute",
        "message": "Unknown attribute contry. Did you mean country?",
        "start": 12,
        "end": 18,
        "line": 1,
        "col": 13,
        "suggestion": "country",
    }
