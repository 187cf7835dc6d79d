"""The pieces of exact ``sum``/``avg`` of a FLOAT (``event_semantics``, ``Spelling.exact_double``):
each engine turns an exact integer sum into the double nearest it, as Python's ``float(int)``.

DuckDB's HUGEINT and ClickHouse's Int128 casts to a double are not guaranteed to round
correctly, so the compiler splits the sum in two exact halves and adds them once; PostgreSQL's
numeric cast rounds correctly. Checked on random large and negative sums and on ties. And
values beyond ±1e12 (which ingest refuses, but a table may hold) are no value to sum and avg
in Python and on each engine, over tables written here directly.
"""

from __future__ import annotations

import functools
import itertools
import operator
import os
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import psycopg
import pytest
import sqlglot
from sqlglot import exp

from audiences.engines import clickhouse_sql as chsql
from audiences.rules import EVENTS_KEY, to_predicate, to_sql, validate_rule
from audiences.rules.event_semantics import FLOAT_SUM_LIMIT, exact_sum, micro_units
from audiences.rules.explain import explain
from audiences.rules.sql_builders import SPELLINGS, template
from audiences.schemas.attributes import AttributeType
from audiences.schemas.events import Event, EventSchema
from tests.engines.kinds import chdb_client

POSTGRES_URL = os.environ.get(
    "AUDIENCES_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def _sums() -> list[int]:
    """Sums as large as a profile's micro-units can reach (|s| < 2**84: 1e18 micro-units times
    millions of events), with ties between two doubles (rounded to even) and their neighbours."""
    rng = random.Random(13)
    found = [0, 1, -1, 2**53 + 1, -(2**53 + 1), 2**84 - 1, -(2**84 - 1), 2**32 - 1, -(2**32)]
    for power in (60, 70, 83):
        step = 2 ** (power - 52)  # the spacing of doubles at 2**power
        for offset in (step // 2, 3 * step // 2, step // 2 + 1, step // 2 - 1):
            found += [2**power + offset, -(2**power + offset)]
    found += [rng.randrange(-(2**bits), 2**bits) for bits in rng.choices(range(20, 85), k=200)]
    return found


def _nearest(dialect: str, literal: str, rows: str) -> str:
    """A query of each sum (as text) and the engine's double nearest it, from ``rows``."""
    column = exp.column("s")
    nearest = template(SPELLINGS[dialect].exact_double, dialect, s=column)
    wide = sqlglot.parse_one(literal, read=dialect)
    inner = exp.select(exp.alias_(wide, "s")).from_(f"({rows}) AS t")
    text = exp.cast(column.copy(), exp.DataType.Type.TEXT)
    query = exp.select(text, nearest).from_(exp.Subquery(this=inner, alias="w"))
    return query.sql(dialect=dialect)


def _check(rows: list[Any]) -> None:
    wrong = [(s, got) for s, got in rows if float(got) != float(int(s))]
    assert len(rows) == len(_sums()) and not wrong, wrong[:5]


@pytest.fixture
def connection() -> psycopg.Connection[Any]:
    """A connection to the test PostgreSQL (skipped when it is unreachable, outside CI)."""
    try:
        return psycopg.connect(POSTGRES_URL, connect_timeout=3)
    except psycopg.OperationalError:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL at {POSTGRES_URL} is unreachable")


def test_duckdb_rounds_an_exact_sum_to_the_nearest_double() -> None:
    values = ", ".join(f"('{s}')" for s in _sums())
    query = _nearest("duckdb", "CAST(x AS HUGEINT)", f"SELECT * FROM (VALUES {values}) AS v(x)")
    _check(duckdb.connect().execute(query).fetchall())


def test_clickhouse_rounds_an_exact_sum_to_the_nearest_double() -> None:
    values = ", ".join(f"'{s}'" for s in _sums())
    query = _nearest("clickhouse", "toInt128(x)", f"SELECT arrayJoin([{values}]) AS x")
    _check(chsql.rows(chdb_client().query(query, "JSONCompact")))


def test_postgres_rounds_an_exact_sum_to_the_nearest_double(
    connection: psycopg.Connection[Any],
) -> None:
    values = ", ".join(f"'{s}'" for s in _sums())
    rows = f"SELECT UNNEST(ARRAY[{values}]) AS x"
    with connection:
        _check(connection.execute(_nearest("postgres", "CAST(x AS NUMERIC)", rows)).fetchall())


def test_decimal_amounts_sum_exactly_whatever_their_order() -> None:
    amounts = [61.35, 406.13, 48.59, 83.93]
    one_by_one = {
        functools.reduce(operator.add, order) for order in (amounts, [*amounts[:2], 83.93, 48.59])
    }
    assert one_by_one == {600.0, 600.0000000000001}  # doubles added as an engine adds them
    for order in itertools.permutations(amounts):
        assert exact_sum([micro_units(a) for a in order]) == 600.0  # type: ignore[misc]
    assert exact_sum([micro_units(0.1), micro_units(0.2)]) == 0.3  # type: ignore[list-item]


def test_micro_units_round_half_up_and_refuse_what_is_out_of_range() -> None:
    halves = [micro_units(v) for v in (0.0000005, -0.0000005, 1.0000015, -0.0000025)]
    assert halves == [1, 0, 1000002, -2]  # ties go up, as floor(x * 1e6 + 0.5) does
    assert micro_units(FLOAT_SUM_LIMIT) == 10**18 and micro_units(-FLOAT_SUM_LIMIT) == -(10**18)
    for value in (2e12, -2e12, float("inf"), float("nan"), None):
        assert micro_units(value) is None


def test_explain_shows_the_exact_value_and_counts_only_the_values_added() -> None:
    when = datetime(2026, 1, 1, tzinfo=UTC)
    amounts = [61.35, 406.13, 83.93, 48.59, 2e12]  # one by one: 600.0000000000001
    events = [
        Event("order", when + timedelta(minutes=n), {"amount": a}) for n, a in enumerate(amounts)
    ]
    schema = EventSchema({"amount": AttributeType.FLOAT}, frozenset({"order"}))
    for text, value in (("sum(amount) = 600", 600.0), ("avg(amount) = 150", 150.0)):
        rule = validate_rule(text, {}, events=schema)
        shown = explain(rule, {EVENTS_KEY: events}, now=when)
        aggregate = shown["tree"]["children"][0]
        assert shown["member"] and aggregate["value"] == value
        assert aggregate["behaviour"]["total"] == 4  # 2e12 is no value to sum or avg


STORED = {1: [2e12, 1.5, -2e12, None], 2: [2e12], 3: [0.1, 0.2, 0.2]}
"""Each profile's stored amounts, values beyond ±1e12 among them (stored before ingest refused
them, or written by another tool): sum and avg treat those as no value."""
GUARDED = {
    "sum(amount) = 1.5": {1},
    "avg(amount) = 1.5": {1},
    "count(amount) = 3": {1, 3},
    "sum(amount) IS NULL": {2},
    "avg(amount) IS NULL": {2},
    "sum(amount) = 0.5": {3},
}
"""Rules over ``STORED`` and the profiles they hold."""


def _guarded_rule(text: str) -> Any:
    schema = EventSchema({"amount": AttributeType.FLOAT}, frozenset({"order"}))
    return validate_rule(text, {}, events=schema)


def _table_rows() -> list[tuple[int, float | None]]:
    return [(pid, amount) for pid, amounts in STORED.items() for amount in amounts]


def test_values_beyond_1e12_are_no_value_to_sum_and_avg_in_python() -> None:
    when = datetime(2026, 1, 1, tzinfo=UTC)
    profiles = {
        pid: {EVENTS_KEY: [Event("order", when, {"amount": a} if a else {}) for a in amounts]}
        for pid, amounts in STORED.items()
    }
    for text, expected in GUARDED.items():
        member = to_predicate(_guarded_rule(text))
        assert {pid for pid, profile in profiles.items() if member(profile)} == expected, text


def _members(run: Any, dialect: str) -> dict[str, set[int]]:
    found = {}
    for text in GUARDED:
        where = to_sql(_guarded_rule(text), dialect)
        found[text] = {int(row[0]) for row in run(f"SELECT pid FROM profiles WHERE {where}")}
    return found


def test_values_beyond_1e12_are_no_value_to_sum_and_avg_on_duckdb() -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE profiles AS SELECT range AS pid FROM range(1, 4)")
    con.execute("CREATE TABLE events (pid BIGINT, event VARCHAR, amount DOUBLE)")
    con.executemany("INSERT INTO events VALUES (?, 'order', ?)", _table_rows())
    assert _members(lambda q: con.execute(q).fetchall(), "duckdb") == GUARDED


def test_values_beyond_1e12_are_no_value_to_sum_and_avg_on_clickhouse() -> None:
    client = chdb_client()
    database = f"guard_{uuid.uuid4().hex[:12]}"
    client.command(f"CREATE DATABASE {database}")
    try:
        client.command(f"CREATE TABLE {database}.profiles (pid Int64) ENGINE = Memory")
        client.command(f"INSERT INTO {database}.profiles VALUES (1), (2), (3)")
        client.command(
            f"CREATE TABLE {database}.events (pid Int64, event String,"
            " amount Nullable(Float64)) ENGINE = Memory"
        )
        rows = ", ".join(
            f"({p}, 'order', {'NULL' if a is None else a!r})" for p, a in _table_rows()
        )
        client.command(f"INSERT INTO {database}.events VALUES {rows}")

        def run(query: str) -> list[Any]:
            query = query.replace("FROM profiles", f"FROM {database}.profiles AS profiles")
            query = query.replace("FROM events", f"FROM {database}.events")
            return list(chsql.rows(client.query(query, "JSONCompact")))

        assert _members(run, "clickhouse") == GUARDED
    finally:
        client.command(f"DROP DATABASE {database}")


def test_values_beyond_1e12_are_no_value_to_sum_and_avg_on_postgres(
    connection: psycopg.Connection[Any],
) -> None:
    with connection:
        connection.execute("CREATE TEMPORARY TABLE profiles AS SELECT generate_series(1, 3) AS pid")
        connection.execute(
            "CREATE TEMPORARY TABLE events (pid BIGINT, event TEXT, amount DOUBLE PRECISION)"
        )
        with connection.cursor() as cursor:
            cursor.executemany("INSERT INTO events VALUES (%s, 'order', %s)", _table_rows())
        members = _members(lambda q: connection.execute(q).fetchall(), "postgres")
        assert members == GUARDED
