"""The streaming copy of a DuckDB workspace's events: only those its streaming rules can read.

Streaming evaluation reads the events of the profiles each write touched (about 500 for a call
of 10,000 events). DuckDB keeps no order by profile, so that read from the events table scans
its whole pid column and unpacks the other columns wherever a touched profile's event lies: at
10M events, 88 ms of CPU per call, a third of the call (``bench.events.stages --loaded``). The
rules read few of those events (the slices of their scopes: orders ever, anything of the last
day), so the engine keeps a copy of just those, in a database held in memory beside the file,
and reads it instead.

The copy is the engine's cache, never a second truth. The engine's lock guards every use of it,
so no read sees the events table and the copy disagree:

- it is built by one ``CREATE TABLE ... AS SELECT`` from the events table when a read asks for
  slices it does not cover (the first streaming read after a start, or the rules widened);
- each write of events appends its events that fall in the copy's slices, once the write
  commits (a transaction of DuckDB writes to one database only);
- an erased profile's and expired events leave it as they leave the table; any other change to
  the events (a move's import, a new property column) drops it, and the next read rebuilds it;
- events older than every slice asked for are pruned from it once a minute;
- a copy that would hold more than :data:`MAX_SHARE` of the events is not kept: the events
  table is read, as without a copy.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb

from audiences.engines import duckdb_sql as sql
from audiences.engines.base import EventSlice, slices_condition
from audiences.schemas.attributes import AttributeType

DATABASE = "streaming_copies"
"""The name of each engine's in-memory database of copies (then a number of its own: two
engines of one process on one file share DuckDB's instance, never their copies)."""

MAX_SHARE = 0.25
"""The largest share of a workspace's events a copy may hold; beyond it a copy is not kept."""

PRUNE_SECONDS = 60.0
"""How often (at most) events that left every slice asked for are deleted from a copy."""

Covered = dict[tuple[str, ...] | None, datetime | None]
"""Slices as event names (None: any) -> the earliest time held (None: any time)."""

Cursor = duckdb.DuckDBPyConnection


@dataclass
class StreamingCopy:
    """A workspace's copy: its table (None when a copy of ``covered`` would not pay), the slices
    it holds, the property columns it has (the events table's when it was built) and when it
    was last pruned (``time.monotonic``)."""

    table: str | None
    covered: Covered
    properties: tuple[str, ...]
    pruned_at: float

    def serves(self, slices: Sequence[EventSlice], properties: Sequence[str]) -> bool:
        """Whether this copy (or the decision not to keep one) answers a read of ``slices``
        on an events table of these ``properties``."""
        return tuple(properties) == self.properties and covers(self.covered, slices)


def table_of(database: str, events_table: str) -> str:
    """The copy's table, in the engine's ``database`` of copies, for a workspace's (quoted)
    events table."""
    return f"{database}.{events_table}"


def attach(con: Cursor) -> str:
    """Attach an in-memory database of copies to a new engine's connection; its name."""
    name = f"{DATABASE}_{next(_numbers)}"
    con.execute(f"ATTACH ':memory:' AS {name}")
    return name


def detach(con: Cursor, database: str) -> None:
    """Detach (and so free) an engine's database of copies."""
    con.execute(f"DETACH DATABASE IF EXISTS {database}")


_numbers = itertools.count(1)


def worth_copying(slices: Sequence[EventSlice]) -> bool:
    """Whether a copy of ``slices`` could hold fewer events than the table: not when one of
    them is every event."""
    return all(slice_ != EventSlice(None, None) for slice_ in slices)


def coverage(slices: Sequence[EventSlice]) -> Covered:
    """``slices`` as one earliest time per set of names.

    >>> from datetime import UTC
    >>> day = datetime(2024, 5, 1, tzinfo=UTC)
    >>> coverage([EventSlice(("a",), day), EventSlice(("a",), None)])
    {('a',): None}
    """
    covered: Covered = {}
    for names, since in slices:
        if names in covered:
            held = covered[names]
            since = None if held is None or since is None else min(held, since)
        covered[names] = since
    return covered


def covers(covered: Covered, slices: Sequence[EventSlice]) -> bool:
    """Whether every event of ``slices`` lies in a slice of ``covered``.

    >>> from datetime import UTC
    >>> day, later = datetime(2024, 5, 1, tzinfo=UTC), datetime(2024, 5, 2, tzinfo=UTC)
    >>> covers({("a", "b"): day}, [EventSlice(("a",), later)])
    True
    >>> covers({("a", "b"): later}, [EventSlice(("a",), day)])
    False
    >>> covers({None: day}, [EventSlice(("c",), day), EventSlice(None, later)])
    True
    """
    return all(
        any(_holds(names, since, wanted) for names, since in covered.items()) for wanted in slices
    )


def _holds(names: tuple[str, ...] | None, since: datetime | None, wanted: EventSlice) -> bool:
    named = names is None or (wanted.names is not None and set(wanted.names) <= set(names))
    timed = since is None or (wanted.since is not None and wanted.since >= since)
    return named and timed


def condition(covered: Covered) -> tuple[str, list[Any]]:
    """The SQL test (positional parameters, then their values) of an event lying in
    ``covered``, over the columns ``event`` and ``"timestamp"``."""
    params: list[Any] = []

    def listed(names: tuple[str, ...]) -> str:
        params.append(list(names))
        return "list_contains(?::VARCHAR[], event)"

    def since(moment: datetime) -> str:
        params.append(moment)
        return '"timestamp" >= ?'

    slices = [EventSlice(names, moment) for names, moment in covered.items()]
    return slices_condition(slices, listed, since), params


def build(
    cur: Cursor,
    database: str,
    events_table: str,
    properties: Mapping[str, AttributeType],
    slices: Sequence[EventSlice],
) -> StreamingCopy:
    """A new copy of the events of ``slices`` (the old one, if any, replaced), or the decision
    not to keep one when it holds more than :data:`MAX_SHARE` of the events."""
    table = table_of(database, events_table)
    covered = coverage(slices)
    test, params = condition(covered)
    columns = ", ".join(['pid, event, "timestamp"', *map(sql.quote, properties)])
    cur.execute(
        f"CREATE OR REPLACE TABLE {table} AS SELECT {columns} FROM {events_table} WHERE {test}",
        params,
    )
    copied = _count(cur, table)
    if copied > MAX_SHARE * _count(cur, events_table):
        cur.execute(f"DROP TABLE {table}")
        return none(slices, properties)
    return StreamingCopy(table, covered, tuple(properties), time.monotonic())


def none(slices: Sequence[EventSlice], properties: Mapping[str, AttributeType]) -> StreamingCopy:
    """The decision to keep no copy of ``slices`` (reads of them read the events table)."""
    return StreamingCopy(None, coverage(slices), tuple(properties), time.monotonic())


def append(
    cur: Cursor,
    copy: StreamingCopy,
    source: str,
    properties: Mapping[str, AttributeType],
) -> None:
    """Append the events of the registered relation ``source`` (the columns
    ``duckdb_events.insert`` appended from) that lie in the copy's slices."""
    assert copy.table is not None
    test, params = condition(copy.covered)
    appended = sql.appended_event_columns(source, properties, with_ids=False)
    cur.execute(f"INSERT INTO {copy.table} SELECT * FROM ({appended}) WHERE {test}", params)


def prune(cur: Cursor, copy: StreamingCopy, slices: Sequence[EventSlice]) -> None:
    """Delete the events that left every slice, when ``slices`` name the sets of names the copy
    holds (later reads ask for their times or later ones) and the last prune is old enough."""
    asked = coverage(slices)
    if copy.table is None or asked.keys() != copy.covered.keys():
        return
    if time.monotonic() - copy.pruned_at < PRUNE_SECONDS:
        return
    # Each slice only narrows (the later of the two times), so what stays is still all the
    # table holds of the narrower slices.
    covered = {names: _later(since, asked[names]) for names, since in copy.covered.items()}
    test, params = condition(covered)
    cur.execute(f"DELETE FROM {copy.table} WHERE NOT {test}", params)
    copy.covered, copy.pruned_at = covered, time.monotonic()


def _later(held: datetime | None, asked: datetime | None) -> datetime | None:
    return held if asked is None else asked if held is None else max(held, asked)


def drop(cur: Cursor, database: str, events_table: str) -> None:
    """Drop a workspace's copy table, if there is one."""
    cur.execute(f"DROP TABLE IF EXISTS {table_of(database, events_table)}")


def _count(cur: Cursor, table: str) -> int:
    row = cur.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0]) if row else 0
