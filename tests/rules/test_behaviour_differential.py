"""Differential test of behavioural conditions: Python and DuckDB agree, as time passes.

Hypothesis (seeded) draws a behavioural rule of any kind combined with attribute conditions
and a batch of profiles with event histories around the window bounds. The rule's three-valued
value on each profile must be the same in Python (the predicate over ``profile[EVENTS_KEY]``)
and in DuckDB (the compiled SQL over tables of the contract's layout), at the reference time and
with the clock moved forward. Set ``AUDIENCES_HYPOTHESIS_EXAMPLES`` to run more examples.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audiences.engines import duckdb_sql
from audiences.rules import EVENTS_KEY, NOW_PARAMETER, Rule, to_sql, validate_rule
from audiences.rules.to_python import Codegen, compile_function
from tests.rules import event_generators as gen

EXAMPLES = max(int(os.environ.get("AUDIENCES_HYPOTHESIS_EXAMPLES", "0")) // 2, 150)
PROFILES = 24


@pytest.fixture(scope="module")
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect()
    connection.execute("SET TimeZone = 'UTC'")
    connection.execute("CREATE TABLE profiles_t (pid UINTEGER NOT NULL, age BIGINT, plan VARCHAR)")
    connection.execute(duckdb_sql.create_events_table("events"))
    for name, kind in gen.PROPERTIES.items():
        connection.execute(duckdb_sql.add_column("events", name, kind))
    yield connection
    connection.close()


def load(con: duckdb.DuckDBPyConnection, profiles: list[dict[str, Any]]) -> None:
    """The profiles and their events as rows of the contract's tables."""
    con.execute("DELETE FROM profiles_t")
    con.execute("DELETE FROM events")
    insert(con, "profiles_t", [[p["pid"], p.get("age"), p.get("plan")] for p in profiles])
    rows = [
        [
            p["pid"],
            e.name,
            e.timestamp,
            None,
            gen.NOW,
            *(e.properties.get(n) for n in gen.PROPERTIES),
        ]
        for p in profiles
        for e in p[EVENTS_KEY]
    ]
    insert(con, "events", rows)


def insert(con: duckdb.DuckDBPyConnection, table: str, rows: list[list[Any]]) -> None:
    """Rows in one statement (DuckDB's executemany runs one statement per row)."""
    if rows:
        one = "(" + ", ".join("?" * len(rows[0])) + ")"
        values = ", ".join([one] * len(rows))
        con.execute(f"INSERT INTO {table} VALUES {values}", [v for row in rows for v in row])


def sql_values(con: duckdb.DuckDBPyConnection, rule: Rule, now: datetime) -> dict[int, Any]:
    """Each profile's value of the rule (TRUE, FALSE or NULL) on DuckDB."""
    where = to_sql(rule, "duckdb", now_parameter=True)
    query = f"SELECT profiles.pid, ({where}) FROM profiles_t AS profiles"
    params = {NOW_PARAMETER: now} if NOW_PARAMETER in where else {}
    return dict(con.execute(query, params).fetchall())


def python_values(rule: Rule, profiles: list[dict[str, Any]], now: datetime) -> dict[int, Any]:
    gen_ = Codegen(rule)
    value = compile_function(gen_, gen_.value(rule.tree), lambda k, p: None, lambda: now)
    return {p["pid"]: value(p) for p in profiles}


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    text=gen.behavioural_rules(),
    profiles=gen.batches(PROFILES),
    shift=st.sampled_from(gen.SHIFTS[1:]),
)
def test_python_and_duckdb_agree_as_time_passes(
    con: duckdb.DuckDBPyConnection, text: str, profiles: list[dict[str, Any]], shift: Any
) -> None:
    rule = validate_rule(text, gen.ATTRIBUTES, events=gen.EVENTS)
    load(con, profiles)
    for now in (gen.NOW, gen.NOW + shift):
        expected = python_values(rule, profiles, now)
        got = sql_values(con, rule, now)
        wrong = [pid for pid in expected if expected[pid] != got[pid]]
        assert not wrong, (
            f"{rule.text!r} at {now}: pid {wrong[0]} python {expected[wrong[0]]}, duckdb"
            f" {got[wrong[0]]}; events {profiles[wrong[0] - 1]}"
        )
