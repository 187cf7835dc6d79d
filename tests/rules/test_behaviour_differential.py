"""Differential test of behavioural conditions: Python and DuckDB agree, as time passes.

Hypothesis (seeded) draws a behavioural rule of any kind combined with attribute conditions
and a batch of profiles with event histories around the window bounds. The rule's three-valued
value on each profile must be the same in Python (the predicate over ``profile[EVENTS_KEY]``)
and in DuckDB and PostgreSQL (the compiled SQL over tables of the contract's layout), at the
reference time and with the clock moved forward. Set ``AUDIENCES_HYPOTHESIS_EXAMPLES`` to run
more examples.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import duckdb
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audiences.engines import duckdb_sql
from audiences.engines.base import EventRecord, ProfileEngine
from audiences.rules import EVENTS_KEY, NOW_PARAMETER, Rule, to_sql, validate_rule
from audiences.rules.to_python import Codegen, compile_function
from audiences.services.evaluation.compiled import engine_column
from tests.engines.kinds import KINDS, opened
from tests.rules import event_generators as gen

POSTGRES_URL = os.environ.get(
    "AUDIENCES_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
PG_TYPES = {"float": "DOUBLE PRECISION", "integer": "BIGINT", "string": "TEXT"}
PG_TYPES |= {"boolean": "BOOLEAN", "timestamp": "TIMESTAMPTZ"}
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


@pytest.fixture(scope="module")
def pg() -> Iterator[psycopg.Connection[Any] | None]:
    """The same tables on PostgreSQL, when it answers (always in CI)."""
    try:
        connection = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError:
        if os.environ.get("CI"):
            raise
        yield None
        return
    connection.execute("SET TIME ZONE 'UTC'")
    connection.execute("CREATE TEMPORARY TABLE profiles_t (pid BIGINT, age BIGINT, plan TEXT)")
    properties = ", ".join(f"{n} {PG_TYPES[str(t)]}" for n, t in gen.PROPERTIES.items())
    connection.execute(
        'CREATE TEMPORARY TABLE events (pid BIGINT, event TEXT, "timestamp" TIMESTAMPTZ,'
        f" event_id TEXT, received_at TIMESTAMPTZ, {properties})"
    )
    yield connection
    connection.close()


def load_pg(pg: psycopg.Connection[Any], profiles: list[dict[str, Any]]) -> None:
    pg.execute("TRUNCATE profiles_t, events")
    with pg.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO profiles_t VALUES (%s, %s, %s)",
            [(p["pid"], p.get("age"), p.get("plan")) for p in profiles],
        )
        marks = ", ".join(["%s"] * (5 + len(gen.PROPERTIES)))
        cursor.executemany(f"INSERT INTO events VALUES ({marks})", rows_of(profiles))


def rows_of(profiles: list[dict[str, Any]]) -> list[list[Any]]:
    """Every event as a row of the contract's events table."""
    return [
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


def pg_values(pg: psycopg.Connection[Any], rule: Rule, now: datetime) -> dict[int, Any]:
    """Each profile's value of the rule on PostgreSQL (the reference time as a literal)."""
    where = to_sql(rule, "postgres", now=now)
    rows = pg.execute(f"SELECT profiles.pid, ({where}) FROM profiles_t AS profiles").fetchall()
    return dict(rows)


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
def test_python_duckdb_and_postgres_agree_as_time_passes(
    con: duckdb.DuckDBPyConnection,
    pg: psycopg.Connection[Any] | None,
    text: str,
    profiles: list[dict[str, Any]],
    shift: Any,
) -> None:
    rule = validate_rule(text, gen.ATTRIBUTES, events=gen.EVENTS)
    load(con, profiles)
    if pg is not None:
        load_pg(pg, profiles)
    for now in (gen.NOW, gen.NOW + shift):
        expected = python_values(rule, profiles, now)
        engines = {"duckdb": sql_values(con, rule, now)}
        if pg is not None:
            engines["postgres"] = pg_values(pg, rule, now)
        for name, got in engines.items():
            wrong = [pid for pid in expected if expected[pid] != got[pid]]
            assert not wrong, (
                f"{rule.text!r} at {now}: pid {wrong[0]} python {expected[wrong[0]]}, {name}"
                f" {got[wrong[0]]}; events {profiles[wrong[0] - 1]}"
            )


def test_postgres_part_runs(pg: psycopg.Connection[Any] | None) -> None:
    """Shows in the report whether the PostgreSQL leg of the test ran."""
    if pg is None:
        pytest.skip(f"PostgreSQL at {POSTGRES_URL} is unreachable: only DuckDB was compared")


ENGINE_EXAMPLES = itertools.count()


@pytest.fixture(scope="module", params=KINDS)
def engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProfileEngine]:
    """Each profile engine on fresh storage (a server kind is skipped where unreachable)."""
    with opened(request.param, tmp_path_factory.mktemp(request.param)) as store:
        yield store.open()


@settings(
    max_examples=max(EXAMPLES // 5, 30),
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(text=gen.behavioural_rules(), profiles=gen.batches(PROFILES))
def test_each_engine_selects_what_python_holds(
    engine: ProfileEngine, text: str, profiles: list[dict[str, Any]]
) -> None:
    """The rule compiled for the engine's dialect, run by its own ``select_pids`` over the
    profiles and events written through it, selects the profiles Python holds TRUE."""
    rule = validate_rule(text, gen.ATTRIBUTES, events=gen.EVENTS)
    workspace = f"b{next(ENGINE_EXAMPLES)}"  # fresh tables: pids 1.. in the profiles' order
    engine.ensure_attributes(workspace, gen.ATTRIBUTES)
    engine.ensure_event_properties(workspace, gen.PROPERTIES)
    attributes = [{k: p[k] for k in gen.ATTRIBUTES if p.get(k) is not None} for p in profiles]
    results = engine.upsert_profiles(
        workspace, [(f"x{p['pid']}", a) for p, a in zip(profiles, attributes, strict=True)]
    )
    assert [r.pid for r in results] == [p["pid"] for p in profiles]
    records = [
        EventRecord(f"x{p['pid']}", e.name, e.timestamp, e.properties)
        for p in profiles
        for e in p[EVENTS_KEY]
    ]
    assert all(r.ok for r in engine.write_events(workspace, records))
    expected = {
        pid for pid, value in python_values(rule, profiles, gen.NOW).items() if value is True
    }
    where = to_sql(rule, engine.dialect, column=engine_column, now=gen.NOW)  # type: ignore[arg-type]
    assert set(engine.select_pids(workspace, where)) == expected, (rule.text, where)
