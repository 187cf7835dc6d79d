"""Names and guards of the DuckDB engine's SQL."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from audiences.engines.duckdb_sql import (
    checked_condition,
    events_table_name,
    quote,
    table_name,
)
from audiences.errors import Unprocessable


def test_table_names_keep_case_and_dashes_apart() -> None:
    names = [table_name(ws) for ws in ["acme", "Acme", "ACME", "a-b", "a_b", "a_hb", "aB", "a_b_"]]
    assert len({name.lower() for name in names}) == len(names)
    assert table_name("Acme-1") == "profiles__uacme_h1"
    assert table_name("a-b") != table_name("aHb")


_IDS = st.text(alphabet="abcHXZ019_-", max_size=8)


@given(_IDS, _IDS)
def test_distinct_workspace_ids_never_share_a_table(one: str, other: str) -> None:
    """DuckDB matches names case-insensitively, so distinct ids need distinct lower-cased names."""
    if one != other:
        assert table_name(one).lower() != table_name(other).lower()


def test_events_tables_sit_beside_profile_tables() -> None:
    assert events_table_name("Acme-1") == "events__uacme_h1"


def test_quote_escapes_quotes() -> None:
    assert quote('a"b') == '"a""b"'


@pytest.mark.parametrize(
    "where_sql",
    ["a = 1 AND list_contains(tags, 'x')", "NOT churned", "country IN (?, ?)", '"a.b" > 2'],
)
def test_single_conditions_pass_unchanged(where_sql: str) -> None:
    assert checked_condition(where_sql) == where_sql


@pytest.mark.parametrize(
    "where_sql",
    ["", "SELECT 1", "a = 1; SELECT 2", "EXISTS (SELECT 1)", "COPY t TO 'x'", "PRAGMA x"],
)
def test_anything_else_is_refused(where_sql: str) -> None:
    with pytest.raises(Unprocessable):
        checked_condition(where_sql)


BEHAVIOURAL = [
    "(SELECT COUNT(*) FROM events AS e WHERE e.pid = profiles.pid AND (e.\"event\" = 'o')) >= 3",
    "COALESCE((SELECT a.v FROM (SELECT e.pid, COUNT(*) AS v FROM events AS e"
    " WHERE (e.\"event\" = 'o') GROUP BY e.pid) AS a WHERE a.pid = profiles.pid), 0) >= 3",
    '(SELECT a.v FROM (SELECT l.pid, l.v FROM (SELECT e.pid, e."p" AS v, ROW_NUMBER()'
    ' OVER (PARTITION BY e.pid ORDER BY e."timestamp" DESC, e."p" DESC) AS n'
    ' FROM events AS e WHERE NOT e."p" IS NULL) AS l WHERE l.n = 1) AS a'
    " WHERE a.pid = profiles.pid) = 'x'",
    "EXISTS(SELECT 1 FROM events AS e1 CROSS JOIN events AS e2 WHERE e1.pid = profiles.pid"
    ' AND e2.pid = profiles.pid AND e1."timestamp" < e2."timestamp")',
]


@pytest.mark.parametrize("where_sql", BEHAVIOURAL)
def test_behavioural_subqueries_pass(where_sql: str) -> None:
    assert checked_condition(where_sql) == where_sql


@pytest.mark.parametrize(
    "where_sql",
    [
        "(SELECT COUNT(*) FROM events AS e) > 1",
        "(SELECT COUNT(*) FROM events AS e WHERE e.pid = profiles.pid OR 1 = 1) > 1",
        "(SELECT COUNT(*) FROM profiles AS e WHERE e.pid = profiles.pid) > 1",
        "(SELECT COUNT(*) FROM main.events AS e WHERE e.pid = profiles.pid) > 1",
        "(SELECT COUNT(*) FROM events AS e WHERE e.pid = profiles.pid AND e.x IN (SELECT 1)) > 1",
        "(SELECT COUNT(*) FROM events AS e, read_csv('x') AS f WHERE e.pid = profiles.pid) > 1",
        "(SELECT COUNT(*) FROM events AS e WHERE e.pid = profiles.pid LIMIT 5) > 1",
        "(SELECT COUNT(*) FROM events AS e WHERE e.pid = profiles.pid GROUP BY 1) > 1",
        "(SELECT COUNT(*), 1 FROM events AS e WHERE e.pid = profiles.pid) > 1",
        "(WITH x AS (SELECT 1) SELECT COUNT(*) FROM events AS e WHERE e.pid = profiles.pid) > 1",
        "(SELECT COUNT(*) FROM (SELECT * FROM events) AS e WHERE e.pid = profiles.pid) > 1",
        "(SELECT COUNT(*) FROM events AS e CROSS JOIN events AS f WHERE e.pid = profiles.pid) > 1",
        "(SELECT 1 FROM events AS e WHERE e.pid = profiles.pid UNION SELECT 2) = 1",
        "EXISTS(SELECT 1 FROM events AS e1 JOIN secrets AS e2 ON TRUE"
        " WHERE e1.pid = profiles.pid AND e2.pid = profiles.pid)",
        "(SELECT COUNT(*) FROM events AS e WHERE e.pid = profiles.pid AND e.a ="
        " (SELECT MAX(g.x) FROM events AS g WHERE g.pid = profiles.pid)) > 1",
    ],
)
def test_other_queries_are_refused(where_sql: str) -> None:
    with pytest.raises(Unprocessable):
        checked_condition(where_sql)


def test_a_rule_that_is_one_boolean_aggregate_alone_passes() -> None:
    """``last(coupon)`` compiles to a bare scalar subquery; it was refused as no expression."""
    where = (
        '(SELECT a.v FROM (SELECT l.pid, l.v FROM (SELECT e.pid, e."coupon" AS v,'
        ' ROW_NUMBER() OVER (PARTITION BY e.pid ORDER BY e."timestamp" DESC) AS n'
        " FROM events AS e) AS l WHERE l.n = 1) AS a WHERE a.pid = profiles.pid)"
    )
    assert checked_condition(where) == where
    with pytest.raises(Unprocessable):
        checked_condition("(SELECT pid FROM other AS o WHERE o.pid = profiles.pid)")
