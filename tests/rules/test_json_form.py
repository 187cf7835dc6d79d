"""JSON tree form: every operator, canonical round trips, raw leaves for what it cannot say."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audiences.rules import parse_rule, parse_rule_json, to_json, validate_rule
from tests.rules import generators
from tests.rules.helpers import SCHEMA

OPERATORS = [
    ({"field": "country", "op": "equals", "value": "US"}, "country = 'US'"),
    ({"field": "country", "op": "not_equals", "value": "US"}, "country <> 'US'"),
    ({"field": "country", "op": "in", "values": ["US", "CA"]}, "country IN ('US', 'CA')"),
    ({"field": "country", "op": "not_in", "values": ["US"]}, "country NOT IN ('US')"),
    ({"field": "email", "op": "contains", "value": "@"}, "contains(email, '@')"),
    ({"field": "email", "op": "not_contains", "value": "@"}, "NOT contains(email, '@')"),
    ({"field": "email", "op": "starts_with", "value": "a"}, "starts_with(email, 'a')"),
    ({"field": "email", "op": "ends_with", "value": ".com"}, "ends_with(email, '.com')"),
    ({"field": "email", "op": "like", "value": "%@a.com"}, "email LIKE '%@a.com'"),
    ({"field": "email", "op": "not_like", "value": "a%"}, "email NOT LIKE 'a%'"),
    ({"field": "email", "op": "ilike", "value": "A%"}, "email ILIKE 'A%'"),
    ({"field": "age", "op": "gt", "value": 30}, "age > 30"),
    ({"field": "age", "op": "gte", "value": -1}, "age >= -1"),
    ({"field": "score", "op": "lt", "value": 2.5}, "score < 2.5"),
    ({"field": "score", "op": "lte", "value": -0.5}, "score <= -0.5"),
    ({"field": "age", "op": "between", "values": [18, 65]}, "age BETWEEN 18 AND 65"),
    ({"field": "age", "op": "is_null"}, "age IS NULL"),
    ({"field": "age", "op": "is_not_null"}, "age IS NOT NULL"),
    ({"field": "churned", "op": "is_true"}, "churned"),
    ({"field": "churned", "op": "is_false"}, "NOT churned"),
    ({"field": "email", "op": "matches", "value": "^a.+z$"}, "regexp_matches(email, '^a.+z$')"),
    ({"field": "tags", "op": "list_contains", "value": "vip"}, "list_contains(tags, 'vip')"),
    ({"field": "tags", "op": "has_any", "values": ["a", "b"]}, "list_has_any(tags, ['a', 'b'])"),
    ({"field": "tags", "op": "has_all", "values": ["a"]}, "list_has_all(tags, ['a'])"),
    (
        {"field": "last_seen", "op": "within_last", "value": 30},
        "last_seen >= now() - INTERVAL 30 DAY",
    ),
    ({"op": "in_audience", "value": "newsletter"}, "in_audience('newsletter')"),
    ({"op": "not_in_audience", "value": "newsletter"}, "NOT in_audience('newsletter')"),
    ({"field": "address.country", "op": "equals", "value": "FR"}, "address.country = 'FR'"),
    ({"expr": "age + 1 > 30"}, "age + 1 > 30"),
]


@pytest.mark.parametrize(("leaf", "text"), OPERATORS)
def test_each_operator(leaf: dict[str, Any], text: str) -> None:
    rule = parse_rule_json(leaf)
    assert rule.text == text
    assert to_json(parse_rule(text)) == leaf


def test_groups() -> None:
    tree = {
        "all": [
            {"field": "country", "op": "in", "values": ["US", "CA"]},
            {
                "any": [
                    {"field": "age", "op": "gte", "value": 30},
                    {"op": "in_audience", "value": "vip"},
                ]
            },
            {
                "none": [
                    {"field": "churned", "op": "is_true"},
                    {"field": "plan", "op": "equals", "value": "free"},
                ]
            },
        ]
    }
    rule = parse_rule_json(tree)
    assert rule.text == (
        "country IN ('US', 'CA') AND (age >= 30 OR in_audience('vip'))"
        " AND NOT (churned OR plan = 'free')"
    )
    assert to_json(rule) == tree
    assert to_json(parse_rule(rule.text)) == tree


def test_single_item_groups_collapse() -> None:
    leaf = {"field": "age", "op": "gt", "value": 1}
    assert to_json(parse_rule_json({"all": [leaf]})) == leaf
    assert to_json(parse_rule_json({"any": [{"all": [leaf]}]})) == leaf


def test_rules_outside_the_operators_become_raw_leaves() -> None:
    rule = parse_rule("age + 1 > 30 AND lower(email) = 'a' AND 30 < age")
    assert to_json(rule) == {
        "all": [{"expr": "age + 1 > 30"}, {"expr": "lower(email) = 'a'"}, {"expr": "30 < age"}]
    }


LEAVES = st.sampled_from([leaf for leaf, _ in OPERATORS])


def _canonical_groups(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    many = st.lists(children, min_size=2, max_size=4)
    return st.one_of(
        many.map(lambda xs: {"all": xs}),
        many.map(lambda xs: {"any": xs}),
        many.map(lambda xs: {"none": xs}),
        st.lists(children.filter(lambda x: "all" in x), min_size=1, max_size=1).map(
            lambda xs: {"none": xs}
        ),
    )


CANONICAL_JSON = st.recursive(LEAVES, _canonical_groups, max_leaves=12)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(CANONICAL_JSON)
def test_json_tree_json_is_lossless(tree: Any) -> None:
    rule = parse_rule_json(tree)
    assert to_json(rule) == tree
    assert to_json(parse_rule(rule.text)) == tree


@settings(max_examples=300, derandomize=True, deadline=None)
@given(generators.rules())
def test_every_tree_has_a_json_form_that_gives_it_back(text: str) -> None:
    rule = parse_rule(text)
    assert parse_rule_json(to_json(rule)).tree == rule.tree
    bound = validate_rule(text, generators.SCHEMA)
    assert validate_rule(to_json(bound), generators.SCHEMA) == bound


def test_typed_literals_are_plain_values_once_the_type_is_known() -> None:
    text = "last_seen > '2024-01-01' AND signed_up > DATE '2024-01-01'"
    assert to_json(parse_rule(text))["all"][0]["value"] == "2024-01-01"
    bound = validate_rule(text, SCHEMA)
    assert to_json(bound) == {
        "all": [
            {"field": "last_seen", "op": "gt", "value": "2024-01-01 00:00:00+00:00"},
            {"expr": "signed_up > DATE '2024-01-01'"},
        ]
    }
