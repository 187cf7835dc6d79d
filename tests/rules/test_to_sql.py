"""SQL back end: golden SQL per engine, hooks, the reference time."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest
from sqlglot import exp

from audiences.rules import NOW_PARAMETER, parse_rule, reads_clock, to_sql, validate_rule
from tests.rules.helpers import NOW, SCHEMA, assert_compiles, audience_sql

GOLDEN = Path(__file__).parent / "fixtures" / "to_sql.sql"
DIALECTS = ("duckdb", "postgres", "clickhouse")
RULES = [
    "country = 'US' AND age >= 30 AND plan IN ('pro', 'team') AND NOT churned",
    "email LIKE '%@acme.com' OR email NOT ILIKE 'Admin%'",
    "list_contains(tags, 'vip') AND list_has_any(tags, ['a', 'b'])"
    " AND list_has_all(scores, [1, 2.5])",
    "last_seen > now() - INTERVAL 30 DAY",
    "birthday + INTERVAL 1 MONTH > current_date",
    "in_audience('newsletter') AND NOT in_audience('churned')",
    "address.country = 'FR' AND plan < 'm'",
    "score / age > 0.1 AND age % 7 = 1 AND 2 * 3 < age",
    "extract(dow from last_seen) = 0 AND date_diff('day', birthday, now()) > 3",
    "regexp_matches(email, '^a.b') AND ends_with(email, '.com') AND contains(email, 'x')",
    "lower(country) = 'us' AND length(trim(plan)) > 2",
    "coalesce(score, 0) BETWEEN 1 AND 2 AND birthday < last_seen",
    "last_seen > '2024-01-01' AND email IS NOT NULL",
]


def _golden_blocks() -> dict[str, dict[str, str]]:
    blocks: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in GOLDEN.read_text(encoding="utf-8").splitlines():
        match = re.match(r"-- (\w+): (.*)", line)
        if match and match[1] == "rule":
            current = blocks.setdefault(match[2], {})
        elif line and not line.startswith("--"):
            dialect, sql = line.split(": ", 1)
            current[dialect] = sql
    return blocks


def _write_goldens() -> None:
    lines = [
        "-- Golden SQL for tests/rules/test_to_sql.py (regenerate: AUDIENCES_UPDATE_GOLDENS=1)."
    ]
    for rule in RULES:
        bound = validate_rule(rule, SCHEMA)
        lines += ["", f"-- rule: {rule}"]
        lines += [f"{d}: {to_sql(bound, d, now=NOW, audience=audience_sql)}" for d in DIALECTS]
    GOLDEN.write_text("\n".join(lines) + "\n", encoding="utf-8")


if os.environ.get("AUDIENCES_UPDATE_GOLDENS"):
    _write_goldens()


@pytest.mark.parametrize("rule", RULES)
def test_golden_sql(rule: str) -> None:
    expected = _golden_blocks()[rule]
    assert sorted(expected) == sorted(DIALECTS)
    assert_compiles(rule, expected)


def test_literals_are_escaped_by_sqlglot() -> None:
    assert_compiles(
        "plan = 'it''s \\ ok'",
        {
            "duckdb": "\"plan\" = 'it''s \\ ok'",
            "postgres": "\"plan\" = 'it''s \\ ok'",
            "clickhouse": "\"plan\" = 'it''s \\\\ ok'",
        },
    )


def test_column_hook_maps_attributes() -> None:
    rule = validate_rule("address.country = 'FR' AND age > 1", SCHEMA)
    hook = {"address.country": exp.column("country", table="a"), "age": exp.column("age_years")}
    assert to_sql(rule, "duckdb", column=hook.__getitem__) == "a.country = 'FR' AND age_years > 1"


def test_filter_only_drops_the_null_guard_where_only_true_counts() -> None:
    """At the top of AND/OR chains ClickHouse tests a list on its subcolumn alone; under NOT
    (where NULL and FALSE differ) the guard stays; other engines keep their one form."""
    rule = validate_rule(
        "(list_contains(tags, 'vip') OR age > 1) AND NOT list_contains(tags, 'x')", SCHEMA
    )
    assert to_sql(rule, "clickhouse", filter_only=True) == (
        '((NOT (\'vip\' IS NULL) AND has("tags"."Array(String)", \'vip\')) OR "age" > 1)'
        " AND NOT CASE WHEN \"tags\" IS NULL OR 'x' IS NULL THEN NULL"
        ' ELSE COALESCE(has("tags"."Array(String)", \'x\'), FALSE) END'
    )
    for dialect in ("duckdb", "postgres"):
        assert to_sql(rule, dialect, filter_only=True) == to_sql(rule, dialect)


def test_now_is_the_callers_reference_time() -> None:
    rule = validate_rule("last_seen > now() AND birthday = current_date", SCHEMA)
    moment = datetime(2024, 1, 1, 1, 30, tzinfo=UTC)
    assert to_sql(rule, "postgres", now=moment) == (
        "\"last_seen\" > CAST('2024-01-01 01:30:00+00:00' AS TIMESTAMPTZ)"
        " AND \"birthday\" = CAST('2024-01-01' AS DATE)"
    )


def test_now_as_a_parameter_keeps_the_text_and_binds_the_time() -> None:
    rule = validate_rule("last_seen > now() - INTERVAL 1 DAY AND birthday = current_date", SCHEMA)
    sql = to_sql(rule, "duckdb", now_parameter=True)
    assert sql == (
        '"last_seen" > CAST($now AS TIMESTAMPTZ) - INTERVAL 1 DAY'
        ' AND "birthday" = CAST(CAST($now AS TIMESTAMPTZ) AS DATE)'
    )
    assert reads_clock(rule)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(
        "CREATE TABLE p AS SELECT TIMESTAMPTZ '2024-01-01 12:00+00' AS last_seen,"
        " DATE '2024-01-01' AS birthday"
    )
    found = [
        con.execute(f"SELECT count(*) FROM p WHERE {sql}", {NOW_PARAMETER: moment}).fetchone()
        for moment in (
            datetime(2024, 1, 1, 23, 59, tzinfo=UTC),
            datetime(2024, 1, 2, 0, 1, tzinfo=UTC),  # a new UTC day: the birthday has passed
            datetime(2024, 1, 2, 13, 0, tzinfo=timezone(timedelta(hours=14))),  # 2024-01-01 UTC
        )
    ]
    assert found == [(1,), (0,), (1,)]


def test_now_as_a_parameter_is_duckdb_only() -> None:
    rule = validate_rule("last_seen > now()", SCHEMA)
    assert not reads_clock(validate_rule("age > 1", SCHEMA))
    with pytest.raises(ValueError, match="now_parameter"):
        to_sql(rule, "postgres", now_parameter=True)


def test_in_audience_needs_a_hook() -> None:
    with pytest.raises(ValueError, match="needs an `audience` hook"):
        to_sql(parse_rule("in_audience('x')"), "duckdb")


def test_unknown_dialect_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown dialect"):
        to_sql(parse_rule("a = 1"), "oracle")  # type: ignore[arg-type]
