"""An independent oracle for behavioural rules: SQL written by hand, never by our compiler.

One rule of every kind (count, distinct count, sum, avg, min, max, first and last time, last
value; windows ever, last N, between offsets, absolute; did not do, first did recently,
stopped doing; sequences with and without ``within``) runs on a fixed history whose events sit
exactly on the window bounds. Its members must be the same from the hand-written SQL (plain
GROUP BY / joins, literal instants, no ``$now``), from our compiled SQL run through the DuckDB
engine (``select_pids``: profiles aliased, events visible as ``events``) and from our Python
predicate. A shared misreading of a bound or of NULL cannot pass unseen.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from audiences.engines import duckdb_sql
from audiences.engines.duckdb import DuckDBEngine
from audiences.rules import (
    EVENTS_KEY,
    NOW_PARAMETER,
    reads_clock,
    to_predicate,
    to_sql,
    validate_rule,
)
from audiences.schemas.attributes import AttributeType as T
from audiences.schemas.events import Event, EventSchema
from audiences.services.evaluation.compiled import engine_column

NOW = datetime(2024, 5, 31, 12, 0, tzinfo=UTC)
WS = "oracle"
EVENTS = EventSchema(
    {"amount": T.FLOAT, "sku": T.STRING, "plan": T.STRING},
    frozenset({"order", "view", "signup", "plan_changed"}),
)


def ago(days: float, micros: int = 0) -> datetime:
    return NOW - timedelta(days=days) + timedelta(microseconds=micros)


def order(when: datetime, amount: float | None, sku: str | None = "a") -> Event:
    return Event("order", when, {"amount": amount, "sku": sku})


HISTORY: dict[str, list[Event]] = {
    # Exactly on the bounds: 30 days, 7 days, 90 days ago, and a microsecond outside them.
    "ann": [order(ago(30), 120.0, "a"), order(ago(7), 5.0, "b"), Event("view", ago(90), {})],
    "bob": [order(ago(30, -1), 60.0), Event("view", ago(14, 1), {}), Event("view", ago(40), {})],
    "cat": [Event("view", ago(3), {}), Event("signup", ago(2), {}), order(ago(1), None, None)],
    "dan": [Event("view", ago(10), {}), Event("signup", ago(7.5), {}), order(ago(5), 250.0)],
    "eve": [],
    "fay": [
        Event("plan_changed", ago(20), {"plan": "pro"}),
        Event("plan_changed", ago(5), {"plan": "free"}),
        Event("plan_changed", ago(1), {"plan": None}),
        Event("view", ago(31), {}),
    ],
    "gus": [
        Event("plan_changed", ago(2), {"plan": "free"}),
        Event("plan_changed", ago(2), {"plan": "pro"}),  # a tie in time: the greatest value
        order(ago(90, -1), 9.5, "c"),
        order(ago(91), 9.0, "c"),
    ],
    "hal": [order(ago(6), 40.0, "a"), order(ago(6), 60.0, "b"), Event("view", ago(6, 1), {})],
}

BEFORE_30 = "TIMESTAMPTZ '2024-05-01 12:00:00+00'"
PROFILE = "SELECT pid FROM p"

CASES: dict[str, tuple[str, str]] = {
    "count": (
        "count(*) FILTER (WHERE event = 'order') >= 2",
        "SELECT pid FROM e WHERE event = 'order' GROUP BY pid HAVING count(*) >= 2",
    ),
    "distinct count": (
        "count(DISTINCT sku) FILTER (WHERE event = 'order') >= 2",
        "SELECT pid FROM e WHERE event = 'order' GROUP BY pid HAVING count(DISTINCT sku) >= 2",
    ),
    "sum": (
        "sum(amount) FILTER (WHERE event = 'order') > 100",
        "SELECT pid FROM e WHERE event = 'order' GROUP BY pid HAVING sum(amount) > 100",
    ),
    "avg": ("avg(amount) >= 50", "SELECT pid FROM e GROUP BY pid HAVING avg(amount) >= 50"),
    "min": ("min(amount) < 10", "SELECT pid FROM e GROUP BY pid HAVING min(amount) < 10"),
    "max": ("max(amount) >= 120", "SELECT pid FROM e GROUP BY pid HAVING max(amount) >= 120"),
    "null sum": (
        "sum(amount) FILTER (WHERE event = 'order') IS NULL",
        f"{PROFILE} WHERE pid NOT IN"
        " (SELECT pid FROM e WHERE event = 'order' AND amount IS NOT NULL)",
    ),
    "first time in the last 7 days": (
        "min(timestamp) FILTER (WHERE event = 'order') >= now() - INTERVAL 7 DAY",
        "SELECT pid FROM e WHERE event = 'order' GROUP BY pid"
        " HAVING min(ts) >= TIMESTAMPTZ '2024-05-24 12:00:00+00'",
    ),
    "last time over 30 days ago": (
        "max(timestamp) FILTER (WHERE event = 'view') < now() - INTERVAL 30 DAY",
        f"SELECT pid FROM e WHERE event = 'view' GROUP BY pid HAVING max(ts) < {BEFORE_30}",
    ),
    "last value": (
        "last(plan) FILTER (WHERE event = 'plan_changed') = 'pro'",
        "SELECT pid FROM (SELECT pid, plan, row_number() OVER (PARTITION BY pid"
        " ORDER BY ts DESC, plan DESC) AS n FROM e WHERE event = 'plan_changed'"
        " AND plan IS NOT NULL) WHERE n = 1 AND plan = 'pro'",
    ),
    "ever": (
        "count(*) FILTER (WHERE event = 'signup') > 0",
        "SELECT DISTINCT pid FROM e WHERE event = 'signup'",
    ),
    "last 30 days": (
        "count(*) FILTER (WHERE event = 'order' AND timestamp >= now() - INTERVAL 30 DAY) >= 1",
        f"SELECT DISTINCT pid FROM e WHERE event = 'order' AND ts >= {BEFORE_30}",
    ),
    "between 90 and 30 days ago": (
        "count(*) FILTER (WHERE event = 'order' AND timestamp BETWEEN now() - INTERVAL 90 DAY"
        " AND now() - INTERVAL 30 DAY) >= 1",
        "SELECT DISTINCT pid FROM e WHERE event = 'order'"
        f" AND ts >= TIMESTAMPTZ '2024-03-02 12:00:00+00' AND ts <= {BEFORE_30}",
    ),
    "absolute": (
        "count(*) FILTER (WHERE timestamp >= TIMESTAMP '2024-05-01 12:00:00'"
        " AND timestamp < TIMESTAMP '2024-05-24 12:00:00') >= 1",
        f"SELECT DISTINCT pid FROM e WHERE ts >= {BEFORE_30}"
        " AND ts < TIMESTAMPTZ '2024-05-24 12:00:00+00'",
    ),
    "did not do": (
        "count(*) FILTER (WHERE event = 'order') = 0",
        f"{PROFILE} WHERE pid NOT IN (SELECT pid FROM e WHERE event = 'order')",
    ),
    "stopped doing": (
        "count(*) FILTER (WHERE event = 'view') > 0"
        " AND count(*) FILTER (WHERE event = 'view' AND timestamp >= now() - INTERVAL 14 DAY) = 0",
        "SELECT DISTINCT pid FROM e WHERE event = 'view' AND pid NOT IN (SELECT pid FROM e"
        " WHERE event = 'view' AND ts >= TIMESTAMPTZ '2024-05-17 12:00:00+00')",
    ),
    "sequence": (
        "sequence(event = 'view', event = 'order')",
        "SELECT DISTINCT a.pid FROM e AS a JOIN e AS b ON a.pid = b.pid AND b.ts > a.ts"
        " WHERE a.event = 'view' AND b.event = 'order'",
    ),
    "sequence within": (
        "sequence(event = 'view', event = 'signup', event = 'order', within => INTERVAL 2 DAY)",
        "SELECT DISTINCT a.pid FROM e AS a JOIN e AS b ON a.pid = b.pid AND b.ts > a.ts"
        " AND b.ts <= a.ts + INTERVAL 2 DAY JOIN e AS c ON c.pid = a.pid AND c.ts > b.ts"
        " AND c.ts <= b.ts + INTERVAL 2 DAY"
        " WHERE a.event = 'view' AND b.event = 'signup' AND c.event = 'order'",
    ),
}


@pytest.fixture(scope="module")
def engine(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[DuckDBEngine, dict[str, int]]]:
    profiles = DuckDBEngine(Path(tmp_path_factory.mktemp("oracle")))
    profiles.ensure_attributes(WS, {"age": T.INTEGER})
    results = profiles.upsert_profiles(WS, [(name, {"age": 30}) for name in HISTORY])
    pids = {name: result.pid or 0 for name, result in zip(HISTORY, results, strict=True)}
    events = duckdb_sql.events_table_name(WS)
    cur = profiles._writer  # the events engineer's write_events is not on this branch yet
    cur.execute(duckdb_sql.create_events_table(events))
    for name, kind in EVENTS.properties.items():
        cur.execute(duckdb_sql.add_column(events, name, kind))
    for name, history in HISTORY.items():
        for event in history:
            cur.execute(
                f"INSERT INTO {events} VALUES (?, ?, ?, NULL, ?, ?, ?, ?)",
                [pids[name], event.name, event.timestamp, NOW]
                + [event.properties.get(p) for p in EVENTS.properties],
            )
    yield profiles, pids
    profiles.close()


def hand_written(engine: DuckDBEngine, pids: dict[str, int], query: str) -> set[str]:
    """The oracle: the hand-written query over CTEs ``p`` (profiles) and ``e`` (events)."""
    tables = (
        f"WITH p AS (SELECT pid FROM {duckdb_sql.table_name(WS)}),"
        f' e AS (SELECT pid, event, "timestamp" AS ts, amount, sku, plan'
        f" FROM {duckdb_sql.events_table_name(WS)}) "
    )
    names = {pid: name for name, pid in pids.items()}
    rows = engine._writer.execute(tables + query).fetchall()
    return {names[row[0]] for row in rows}


@pytest.mark.parametrize("kind", list(CASES))
def test_members_match_a_hand_written_query(
    engine: tuple[DuckDBEngine, dict[str, int]], kind: str
) -> None:
    profiles, pids = engine
    text, query = CASES[kind]
    rule = validate_rule(text, {"age": T.INTEGER}, events=EVENTS)
    expected = hand_written(profiles, pids, query)
    where = to_sql(rule, "duckdb", column=engine_column, now_parameter=True)
    params: dict[str, Any] = {NOW_PARAMETER: NOW} if reads_clock(rule) else {}
    names = {pid: name for name, pid in pids.items()}
    ours = {names[pid] for pid in profiles.select_pids(WS, where, params)}
    predicate = to_predicate(rule, clock=lambda: NOW)
    python = {name for name, history in HISTORY.items() if predicate({EVENTS_KEY: history})}
    assert ours == expected, (kind, where)
    assert python == expected, kind
    assert 0 < len(expected) < len(HISTORY), f"{kind}: the history does not tell members apart"
