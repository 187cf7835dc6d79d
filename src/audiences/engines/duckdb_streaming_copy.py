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
- at most once a minute it loses the events no slice read still needs, and its share of the
  events is judged again;
- no copy is kept of fewer than :data:`MIN_EVENTS` events, nor one that would hold more than
  :data:`MAX_SHARE` of them (nor after a build failed): the events table is read, as without a
  copy, and the decision is revisited after :data:`RECHECK_SECONDS`.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb

from audiences.engines import duckdb_events
from audiences.engines import duckdb_sql as sql
from audiences.engines.base import EventSlice
from audiences.schemas.attributes import AttributeType

DATABASE = "streaming_copies"
"""The name of each engine's in-memory database of copies (then a number of its own: two
engines of one process on one file share DuckDB's instance, never their copies)."""

MAX_SHARE = 0.25
"""The largest share of a workspace's events a copy may hold; beyond it a copy is not kept."""

MIN_EVENTS = 100_000
"""Below this many events a workspace keeps no copy: a scan of its table costs little."""

PRUNE_SECONDS = 60.0
"""How often (at most) a copy loses the events that left every slice asked for, and its share
of the events is judged again."""

RECHECK_SECONDS = 600.0
"""How long a decision to keep no copy stands (the events grow; a build that failed may not)."""

Covered = dict[tuple[str, ...] | None, datetime | None]
"""Slices as event names, as the reads name them (None: any) -> the earliest time held (None:
any time)."""

Cursor = duckdb.DuckDBPyConnection


@dataclass
class StreamingCopy:
    """A workspace's copy: its table (None for a decision to keep none), the slices it holds,
    the property columns it has (the events table's when it was built) and when it was built,
    pruned or decided (``time.monotonic``)."""

    table: str | None
    covered: Covered
    properties: tuple[str, ...]
    checked_at: float

    def serves(self, slices: Sequence[EventSlice], properties: Sequence[str]) -> bool:
        """Whether this copy (or the decision to keep none, while it stands) answers a read
        of ``slices`` on an events table of these ``properties``."""
        standing = self.table is not None or time.monotonic() - self.checked_at < RECHECK_SECONDS
        return standing and tuple(properties) == self.properties and covers(self.covered, slices)


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


def condition(covered: Covered) -> tuple[str, list[Any]]:
    """The SQL test of an event lying in ``covered`` (``duckdb_events.slices_test``)."""
    return duckdb_events.slices_test([EventSlice(names, since) for names, since in covered.items()])


def build(
    cur: Cursor,
    database: str,
    events_table: str,
    properties: Mapping[str, AttributeType],
    slices: Sequence[EventSlice],
) -> StreamingCopy:
    """A new copy of the events of ``slices`` (the old one, if any, replaced), or the decision
    to keep none: for fewer than :data:`MIN_EVENTS` events, or when it would hold more than
    :data:`MAX_SHARE` of them. A failed build leaves no table behind."""
    total = _count(cur, events_table)
    if total < MIN_EVENTS:
        return no_copy(slices, properties)
    table = table_of(database, events_table)
    covered = coverage(slices)
    test, params = condition(covered)
    columns = ", ".join(['pid, event, "timestamp"', *map(sql.quote, properties)])
    try:
        cur.execute(
            f"CREATE OR REPLACE TABLE {table} AS SELECT {columns} FROM {events_table} WHERE {test}",
            params,
        )
        if _count(cur, table) <= MAX_SHARE * total:
            return StreamingCopy(table, covered, tuple(properties), time.monotonic())
    except BaseException:
        drop(cur, database, events_table)
        raise
    drop(cur, database, events_table)
    return no_copy(slices, properties)


def no_copy(slices: Sequence[EventSlice], properties: Mapping[str, AttributeType]) -> StreamingCopy:
    """The decision to keep no copy of ``slices`` (reads of them read the events table) for
    :data:`RECHECK_SECONDS`."""
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


def prune(
    cur: Cursor, copy: StreamingCopy, slices: Sequence[EventSlice], events_table: str
) -> None:
    """When the last check is old enough: delete from the copy the events no read of
    ``slices`` or a later one needs (:func:`narrowed`), then judge its share of the events
    again, and drop it (a decision to keep none) beyond :data:`MAX_SHARE`."""
    if copy.table is None or time.monotonic() - copy.checked_at < PRUNE_SECONDS:
        return
    kept = narrowed(copy.covered, slices)
    test, params = condition(kept)
    cur.execute(f"DELETE FROM {copy.table} WHERE NOT {test}", params)
    copy.covered, copy.checked_at = kept, time.monotonic()
    if _count(cur, copy.table) > MAX_SHARE * _count(cur, events_table):
        cur.execute(f"DROP TABLE {copy.table}")
        copy.table = None


def narrowed(covered: Covered, slices: Sequence[EventSlice]) -> Covered:
    """The slices of ``covered`` that hold some of ``slices`` (which it covers), each from the
    earliest time those ask for: what a copy must keep for reads of ``slices`` and later ones
    (of the same times or later; an earlier one is not covered, and rebuilds). Each slice only
    narrows, so the copy still holds all that the table has of them.

    >>> from datetime import UTC
    >>> t = [datetime(2024, 5, day, tzinfo=UTC) for day in (1, 2, 3)]
    >>> held = {("a",): t[1], ("a", "b"): t[0], ("c",): t[0]}
    >>> narrowed(held, [EventSlice(("a",), t[0]), EventSlice(("a", "b"), t[2])]) == {
    ...     ("a", "b"): t[0]}
    True
    """
    kept: Covered = {}
    for names, since in covered.items():
        asked = [wanted.since for wanted in slices if _holds(names, since, wanted)]
        if asked:
            kept[names] = None if None in asked else min(a for a in asked if a is not None)
    return kept


def _holds(names: tuple[str, ...] | None, since: datetime | None, wanted: EventSlice) -> bool:
    named = names is None or (wanted.names is not None and set(wanted.names) <= set(names))
    timed = since is None or (wanted.since is not None and wanted.since >= since)
    return named and timed


def drop(cur: Cursor, database: str, events_table: str) -> None:
    """Drop a workspace's copy table, if there is one."""
    cur.execute(f"DROP TABLE IF EXISTS {table_of(database, events_table)}")


def _count(cur: Cursor, table: str) -> int:
    row = cur.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0]) if row else 0
