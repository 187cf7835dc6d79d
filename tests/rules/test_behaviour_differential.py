"""Differential test of behavioural conditions: Python and every engine agree, as time passes.

Hypothesis (seeded) draws a behavioural rule of any kind combined with attribute conditions
and a batch of profiles with event histories around the window bounds. The rule's three-valued
value on each profile must be the same in Python (the predicate over ``profile[EVENTS_KEY]``)
and in DuckDB, PostgreSQL and ClickHouse (chdb, on every second example; the compiled SQL over
tables of the contract's layout, ClickHouse's made by its engine's own DDL), at the reference
time and with the clock moved forward. Engines get each profile's events newest first, Python
reads them oldest first, so a sum or average that depends on the order its values are added in
shows (some histories' two-decimal amounts sum or average exactly to a rule's threshold, see
``event_generators``). Set ``AUDIENCES_HYPOTHESIS_EXAMPLES`` to run more examples.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import duckdb
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audiences.engines import clickhouse_sql as chsql
from audiences.engines import duckdb_sql
from audiences.engines.base import EventRecord, ProfileEngine
from audiences.engines.clickhouse_client import ChdbClient
from audiences.rules import EVENTS_KEY, NOW_PARAMETER, Rule, to_sql, validate_rule
from audiences.rules.to_python import Codegen, compile_function
from audiences.services.evaluation.compiled import engine_column
from tests.engines.kinds import KINDS, chdb_client, opened
from tests.rules import event_generators as gen

POSTGRES_URL = os.environ.get(
    "AUDIENCES_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
PG_TYPES = {"float": "DOUBLE PRECISION", "integer": "BIGINT", "string": "TEXT"}
PG_TYPES |= {"boolean": "BOOLEAN", "timestamp": "TIMESTAMPTZ"}
EXAMPLES = max(int(os.environ.get("AUDIENCES_HYPOTHESIS_EXAMPLES", "0")) // 2, 150)
PROFILES = 24
CLICKHOUSE_TURNS = itertools.count()
"""ClickHouse is compared on every second example (chdb takes ~10 ms a statement)."""


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


@pytest.fixture(scope="module")
def ch() -> Iterator[ChdbClient]:
    """The same tables on ClickHouse in process, the events table as its engine makes it."""
    client = chdb_client()
    database = f"behaviour_{uuid.uuid4().hex[:12]}"
    client.command(f"CREATE DATABASE {database}")
    client.command(f"USE {database}")
    client.command(
        "CREATE TABLE profiles_t (pid UInt32, age Nullable(Int64), plan Nullable(String))"
        " ENGINE = MergeTree ORDER BY pid"
    )
    client.command(chsql.create_events("events"))
    for name, kind in gen.PROPERTIES.items():
        client.command(chsql.add_column("events", name, kind))
    yield client
    client.command(f"DROP DATABASE {database}")
    client.close()


def load_ch(client: ChdbClient, profiles: list[dict[str, Any]]) -> None:
    client.command("TRUNCATE TABLE profiles_t")
    client.command("TRUNCATE TABLE events")
    profile_columns = {
        "pid": [p["pid"] for p in profiles],
        "age": [p.get("age") for p in profiles],
        "plan": [p.get("plan") for p in profiles],
    }
    client.insert("profiles_t", list(profile_columns), chsql.document(profile_columns))
    rows = rows_of(profiles)
    if rows:
        names = ["pid", "event", "timestamp", "event_id", "received_at", *gen.PROPERTIES]
        columns = {
            name: [v.isoformat() if isinstance(v, datetime) else v for v in values]
            for name, values in zip(names, zip(*rows, strict=True), strict=True)
        }
        client.insert("events", [chsql.quote(name) for name in columns], chsql.document(columns))


def ch_values(client: ChdbClient, rule: Rule, now: datetime) -> dict[int, Any]:
    """Each profile's value of the rule on ClickHouse (the reference time as a literal)."""
    where = to_sql(rule, "clickhouse", now=now)
    query = f"SELECT profiles.pid, ({where}) FROM profiles_t AS profiles"
    try:
        rows = chsql.rows(client.query(query, "JSONCompact"))
    except Exception as error:  # the failing SQL is the useful part of the report
        raise AssertionError(f"clickhouse failed on {rule.text!r}:\n{query}\n{error}") from error
    return {pid: None if value is None else bool(value) for pid, value in rows}


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
    """Every event as a row of the contract's events table, each profile's newest first: the
    reverse of the order Python reads them in (see the module's docstring)."""
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
        for e in reversed(p[EVENTS_KEY])
    ]


def load(con: duckdb.DuckDBPyConnection, profiles: list[dict[str, Any]]) -> None:
    """The profiles and their events as rows of the contract's tables."""
    con.execute("DELETE FROM profiles_t")
    con.execute("DELETE FROM events")
    insert(con, "profiles_t", [[p["pid"], p.get("age"), p.get("plan")] for p in profiles])
    insert(con, "events", rows_of(profiles))


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
def test_python_and_every_engine_agree_as_time_passes(
    con: duckdb.DuckDBPyConnection,
    pg: psycopg.Connection[Any] | None,
    ch: ChdbClient,
    text: str,
    profiles: list[dict[str, Any]],
    shift: Any,
) -> None:
    rule = validate_rule(text, gen.ATTRIBUTES, events=gen.EVENTS)
    load(con, profiles)
    if pg is not None:
        load_pg(pg, profiles)
    on_clickhouse = next(CLICKHOUSE_TURNS) % 2 == 0
    if on_clickhouse:
        load_ch(ch, profiles)
    for now in (gen.NOW, gen.NOW + shift):
        expected = python_values(rule, profiles, now)
        engines = {"duckdb": sql_values(con, rule, now)}
        if pg is not None:
            engines["postgres"] = pg_values(pg, rule, now)
        if on_clickhouse:
            engines["clickhouse"] = ch_values(ch, rule, now)
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
        for e in reversed(p[EVENTS_KEY])
    ]
    assert all(r.ok for r in engine.write_events(workspace, records))
    expected = {
        pid for pid, value in python_values(rule, profiles, gen.NOW).items() if value is True
    }
    where = to_sql(rule, engine.dialect, column=engine_column, now=gen.NOW)  # type: ignore[arg-type]
    assert set(engine.select_pids(workspace, where)) == expected, (rule.text, where)
