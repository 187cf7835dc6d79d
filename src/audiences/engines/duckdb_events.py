"""Events in the DuckDB engine: the statements that write and read a workspace's events table.

The engine (:mod:`audiences.engines.duckdb`) holds the lock, the transaction and the workspace
state; these functions run on the cursor it hands them. Events are appended from numpy
columns, and read back ordered on every column, so that ties on the time come back in one order
every time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from itertools import repeat
from operator import floordiv, sub
from typing import Any

import duckdb
import numpy as np

from audiences.engines import duckdb_sql as sql
from audiences.engines.base import (
    EventPage,
    EventPosition,
    EventSlice,
    MovedEvent,
    slices_condition,
)
from audiences.engines.event_writes import CheckedEvent
from audiences.engines.rows import EPOCH, EventReader, event_page, rule_events_by_pid
from audiences.engines.seen_ids import HashArray
from audiences.schemas.attributes import AttributeType
from audiences.schemas.events import Event

APPENDED = "appended_events"
"""The name under which a batch's numpy columns are registered for the append."""

HASHED = "hashed_event_ids"
"""The name under which a batch's event ids are registered to be hashed."""

Cursor = duckdb.DuckDBPyConnection
MICROSECOND = timedelta(microseconds=1)


def stored_event_ids(
    cur: Cursor, table: str, event_ids: list[str], since: datetime | None = None
) -> set[str]:
    """Which of ``event_ids`` the events table holds already (received at ``since`` or later,
    when given). The engine asks only for the ids whose hash its ``SeenIds`` holds.

    Without ``since`` this reads the whole ``event_id`` column. With it, the row groups' zone
    maps on ``received_at`` skip those received before, as long as ``received_at`` grows with
    the order rows were appended (writes append in arrival order; a move into DuckDB appends
    by pid, and then the lookup scans). At 10M events received over 180 days, 10,000 random
    ids: 361 ms of CPU without, 25 with a 7-day window (bench/README.md "Ingest at scale",
    ``bench.events.stages --loaded``, at load average 6).
    """
    if not event_ids:
        return set()
    query = f"SELECT DISTINCT event_id FROM {table} WHERE event_id IN (SELECT unnest(?::VARCHAR[]))"
    params: list[Any] = [event_ids]
    if since is not None:
        query += " AND received_at >= ?"
        params.append(since)
    return {row[0] for row in cur.execute(query, params).fetchall()}


def id_hashes(cur: Cursor, event_ids: list[str]) -> HashArray:
    """DuckDB's ``hash`` of each id, in order: how :class:`~audiences.engines.seen_ids.SeenIds`
    holds the stored ids. The ids are scanned from a registered column (9,000 ids: 1.7 ms of
    CPU, against 5 passed as a list parameter) and put back in order by their position."""
    count = len(event_ids)
    cur.register(HASHED, {"n": np.arange(count, dtype=np.int64), "id": np.array(event_ids, object)})
    try:
        found = cur.execute(f"SELECT n, hash(id) AS h FROM {HASHED}").fetchnumpy()
    finally:
        with contextlib.suppress(duckdb.TransactionException):
            cur.unregister(HASHED)
    hashes = np.empty(count, dtype=np.uint64)
    hashes[np.asarray(found["n"])] = np.asarray(found["h"])
    return hashes


def received_since(cur: Cursor, table: str, since: datetime) -> int:
    """How many events were received at ``since`` or later (zone maps skip the rest)."""
    row = cur.execute(f"SELECT count(*) FROM {table} WHERE received_at >= ?", [since]).fetchone()
    return int(row[0]) if row else 0


def held_hashes(cur: Cursor, table: str, since: datetime) -> HashArray:
    """The hash of every event id received at ``since`` or later (350,000 of them: 45 ms of
    CPU with the sort that follows, once; then each batch is looked up in about 2 ms)."""
    query = (
        f"SELECT hash(event_id) AS h FROM {table} WHERE event_id IS NOT NULL AND received_at >= ?"
    )
    return np.asarray(cur.execute(query, [since]).fetchnumpy()["h"], dtype=np.uint64)


Columns = dict[str, "np.ndarray[Any, Any]"]
"""A batch of events as the numpy columns an append reads (see :func:`columns`)."""


def columns(
    schema: dict[str, AttributeType],
    events: Sequence[CheckedEvent],
    pids: Mapping[str, int],
) -> Columns:
    """``events``, each under the pid of its external id, as numpy columns DuckDB scans in
    place: ``pid``, ``event``, ``micros``, ``event_id`` and the properties of ``schema`` as
    ``p0``, ``p1`` … (Python objects, which DuckDB types by looking at them all)."""
    count = len(events)
    _, external_ids, names, times, event_ids, values = zip(*events, strict=True)
    # Built by C loops (maps of built-in methods), not a Python generator per column.
    found: Columns = {
        "pid": np.fromiter(map(pids.__getitem__, external_ids), np.uint32, count),
        "event": np.fromiter(names, object, count),
        "micros": np.fromiter(
            map(floordiv, map(sub, times, repeat(EPOCH)), repeat(MICROSECOND)), np.int64, count
        ),
        "event_id": np.fromiter(event_ids, object, count),
    }
    for n, name in enumerate(schema):
        found[f"p{n}"] = np.fromiter(map(dict.get, values, repeat(name)), object, count)
    return found


def insert(
    cur: Cursor,
    table: str,
    schema: dict[str, AttributeType],
    batch: Columns,
    received_at: datetime,
) -> None:
    """Append a batch of :func:`columns`, cast to the columns' types. For 10,000 events with
    four properties this took 11 ms, against 28 ms for one JSON document of columns parsed by
    ``from_json``."""
    with registered(cur, batch) as source:
        cur.execute(sql.append_events(table, source, schema), {"received": received_at})


@contextlib.contextmanager
def registered(cur: Cursor, batch: Columns) -> Iterator[str]:
    """``batch`` registered on the cursor, under the name given, for the time of the block."""
    # One name per cursor: a registration replaces the last of its name, so a batch whose
    # unregistering failed is not kept past the next append.
    cur.register(APPENDED, batch)
    try:
        yield APPENDED
    finally:
        # After a failed insert DuckDB has aborted the caller's transaction and refuses to
        # unregister in it; the insert's own error is the one to raise.
        with contextlib.suppress(duckdb.TransactionException):
            cur.unregister(APPENDED)


def read_of(
    cur: Cursor,
    table: str,
    schema: Mapping[str, AttributeType],
    pids: list[int],
    slices: Sequence[EventSlice] | None,
) -> dict[int, list[Event]]:
    """Each pid's events, oldest first (only those in one of ``slices`` when given)."""
    where = "pid IN (SELECT unnest(?::UINTEGER[]))"
    params: list[Any] = [pids]
    if slices is not None:
        test, values = slices_test(slices)
        where += " AND " + test
        params += values
    rows = cur.execute(sql.select_rule_events(table, list(schema), where), params).fetchall()
    return rule_events_by_pid(rows, schema)


def slices_test(slices: Sequence[EventSlice]) -> tuple[str, list[Any]]:
    """The SQL test of an event lying in one of ``slices`` (over the columns ``event`` and
    ``"timestamp"``), with positional parameters, and their values."""
    params: list[Any] = []

    def listed(names: tuple[str, ...]) -> str:
        params.append(list(names))
        return "list_contains(?::VARCHAR[], event)"

    def since(moment: datetime) -> str:
        params.append(moment)
        return '"timestamp" >= ?'

    return slices_condition(slices, listed, since), params


def read_page(
    cur: Cursor,
    table: str,
    schema: Mapping[str, AttributeType],
    pid: int,
    *,
    limit: int,
    after: EventPosition | None,
    names: Sequence[str],
) -> EventPage:
    """One page of a profile's events, newest first; see ``ProfileEngine.profile_events``.

    A page resumes at the time its predecessor stopped, skipping the events of exactly that
    time it gave already: events are ordered on every column, so those come first again.
    """
    where = "pid = ?"
    params: list[Any] = [pid]
    if names:
        where += " AND event IN (SELECT unnest(?::VARCHAR[]))"
        params.append(list(names))
    skip = 0
    if after is not None:
        where += ' AND "timestamp" <= ?'
        params.append(after.timestamp)
        skip = after.skip
    query = sql.select_events(table, list(schema), where, "DESC") + " LIMIT ? OFFSET ?"
    rows = cur.execute(query, [*params, limit + 1, skip]).fetchall()
    return event_page(rows, EventReader(schema), limit=limit, after=after)


def export(
    cur: Cursor,
    table: str,
    schema: Mapping[str, AttributeType],
    start: int,
    skip: int,
    limit: int,
) -> list[MovedEvent]:
    """Events in copy order from ``start`` on, ``skip`` of them left out (see
    :func:`duckdb_sql.export_events`), each with its pid."""
    query = sql.export_events(table, list(schema))
    rows = cur.execute(query, {"start": start, "skip": skip, "limit": limit}).fetchall()
    read = EventReader(schema)
    return [(int(row[0]), read(row)) for row in rows]
