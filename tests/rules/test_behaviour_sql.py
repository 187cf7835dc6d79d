"""Behavioural conditions as engine SQL: the shapes the engines' condition checks admit."""

from __future__ import annotations

import pytest

from audiences.engines.duckdb_sql import checked_condition
from audiences.rules import DIALECTS, to_sql, validate_rule
from tests.rules import event_generators as gen
from tests.rules.helpers import NOW

CASES = {
    "count(*) FILTER (WHERE event = 'order' AND timestamp >= now() - INTERVAL 30 DAY) >= 3": (
        "COALESCE((SELECT a.v FROM (SELECT e.pid, COUNT(*) AS v FROM events AS e"
        ' WHERE e."event" = \'order\' AND e."timestamp" >= CAST($now AS TIMESTAMPTZ)'
        " - INTERVAL 30 DAY GROUP BY e.pid) AS a WHERE a.pid = profiles.pid), 0) >= 3"
    ),
    "last(sku) = 'a'": (
        '(SELECT a.v FROM (SELECT l.pid, l.v FROM (SELECT e.pid, e."sku" AS v, ROW_NUMBER()'
        ' OVER (PARTITION BY e.pid ORDER BY e."timestamp" DESC, e."sku" DESC) AS n'
        ' FROM events AS e WHERE NOT e."sku" IS NULL) AS l WHERE l.n = 1) AS a'
        " WHERE a.pid = profiles.pid) = 'a'"
    ),
    "sequence(event = 'view', event = 'order', within => INTERVAL 1 DAY)": (
        "EXISTS(SELECT 1 FROM events AS e1 CROSS JOIN events AS e2 WHERE e1.pid = profiles.pid"
        " AND e1.\"event\" = 'view' AND e2.pid = profiles.pid AND e2.\"event\" = 'order'"
        ' AND e1."timestamp" < e2."timestamp" AND e2."timestamp" <= e1."timestamp"'
        " + INTERVAL 1 DAY)"
    ),
}


@pytest.mark.parametrize("text", list(CASES))
def test_duckdb_sql_is_a_correlated_subquery_the_engine_admits(text: str) -> None:
    rule = validate_rule(text, gen.ATTRIBUTES, events=gen.EVENTS)
    sql = to_sql(rule, "duckdb", now_parameter=True)
    assert sql == CASES[text]
    assert checked_condition(sql) == sql


@pytest.mark.parametrize("text", list(CASES))
def test_every_dialect_compiles(text: str) -> None:
    rule = validate_rule(text, gen.ATTRIBUTES, events=gen.EVENTS)
    for dialect in DIALECTS:
        assert "profiles.pid" in to_sql(rule, dialect, now=NOW)


def test_clickhouse_spells_empty_aggregates_as_null() -> None:
    rule = validate_rule("sum(amount) > 1 AND avg(qty) > 1", gen.ATTRIBUTES, events=gen.EVENTS)
    sql = to_sql(rule, "clickhouse", now=NOW)
    assert "sumOrNull(" in sql and "avgOrNull(" in sql
