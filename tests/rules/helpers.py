"""Shared helpers for rule tests: round trips, golden SQL, a schema covering every type."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from sqlglot import exp

from audiences.rules import Rule, parse_rule, parse_rule_json, to_json, to_sql, validate_rule
from audiences.schemas.attributes import AttributeType as T

SCHEMA: dict[str, T] = {
    "country": T.STRING,
    "email": T.STRING,
    "plan": T.STRING,
    "age": T.INTEGER,
    "visits": T.INTEGER,
    "score": T.FLOAT,
    "churned": T.BOOLEAN,
    "last_seen": T.TIMESTAMP,
    "signed_up": T.TIMESTAMP,
    "birthday": T.DATE,
    "tags": T.STRING_LIST,
    "scores": T.NUMBER_LIST,
    "address.country": T.STRING,
    "extra": T.JSON,
}
"""One attribute of each type (and a nested one), used across the rule tests."""

NOW = datetime(2024, 5, 31, 12, 0, tzinfo=UTC)
"""The reference time used wherever a test needs ``now()``."""


def audience_sql(key: str) -> exp.Expression:
    """A test audience hook for SQL: membership as ``pid IN (SELECT ...)`` of a fixed list."""
    return exp.column("pid").isin(*(exp.Literal.number(n) for n in (1, 2, 3)))


def assert_round_trip(text: str) -> Rule:
    """Text -> tree -> canonical text -> tree gives the same tree, and the JSON form too."""
    rule = parse_rule(text)
    again = parse_rule(rule.text)
    assert again.tree == rule.tree, f"{text!r} -> {rule.text!r} parses differently"
    assert again.text == rule.text
    from_json = parse_rule_json(to_json(rule))
    assert to_json(from_json) == to_json(rule)
    assert parse_rule_json(to_json(from_json)).tree == from_json.tree
    return rule


def assert_compiles(rule: Rule | str, expected: Mapping[str, str]) -> None:
    """The rule (validated against SCHEMA) compiles to exactly the expected SQL per dialect."""
    bound = validate_rule(rule, SCHEMA)
    for dialect, sql in expected.items():
        got = to_sql(bound, dialect, now=NOW, audience=audience_sql)  # type: ignore[arg-type]
        assert got == sql, f"{dialect}: {got}"
