"""Events in the PostgreSQL engine: the statements that write and read a workspace's events.

The engine (:mod:`audiences.engines.postgres`) holds the connection and the transaction; these
functions run on the connection it hands them. Events go in through ``COPY`` and are read back
ordered on every column, so ties on the time come back in one order every time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import psycopg

from audiences.engines import postgres_sql as sql
from audiences.engines.base import EventPage, EventPosition, EventSlice, slices_condition
from audiences.engines.event_writes import CheckedEvent
from audiences.engines.rows import EventReader, event_page, events_by_pid
from audiences.schemas.attributes import AttributeType
from audiences.schemas.events import Event

Connection = psycopg.Connection[Any]

EVENT_COLUMNS = ("pid", "event", "timestamp", "event_id", "received_at")
"""The columns every events table starts with, before one typed column per property."""


def stored_event_ids(conn: Connection, table: str, event_ids: list[str]) -> set[str]:
    """Which of ``event_ids`` the events table holds already."""
    if not event_ids:
        return set()
    query = f"SELECT event_id FROM {table} WHERE event_id = ANY(%s)"
    return {row[0] for row in conn.execute(query, [event_ids]).fetchall()}


def receipts_of_ids(conn: Connection, table: str, event_ids: list[str]) -> dict[str, datetime]:
    """The ``received_at`` of the stored event of each of ``event_ids`` the table holds."""
    if not event_ids:
        return {}
    query = f"SELECT event_id, received_at FROM {table} WHERE event_id = ANY(%s)"
    return {row[0]: row[1] for row in conn.execute(query, [event_ids]).fetchall()}


def clear_ids(conn: Connection, table: str, event_ids: set[str]) -> None:
    """Set the ``event_id`` of the stored events of ``event_ids`` to NULL (a move gives each
    id to an earlier-received copy, ``portable.first_copies_keep_ids``)."""
    if event_ids:
        query = f"UPDATE {table} SET event_id = NULL WHERE event_id = ANY(%s)"
        conn.execute(query, [sorted(event_ids)])


def insert(
    conn: Connection,
    table: str,
    schema: Mapping[str, AttributeType],
    events: Sequence[CheckedEvent],
    pids: Mapping[str, int],
    received_at: datetime,
) -> None:
    """Copy ``events`` in, each under the pid of its external id."""
    names = list(schema)
    columns = ", ".join([*map(sql.quote, EVENT_COLUMNS), *map(sql.quote, names)])
    with conn.cursor().copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        for e in events:
            values = e.values
            copy.write_row(
                (
                    pids[e.external_id],
                    e.name,
                    e.timestamp,
                    e.event_id,
                    received_at,
                    *(values.get(name) for name in names),
                )
            )


def read_of(
    conn: Connection,
    table: str,
    schema: Mapping[str, AttributeType],
    pids: list[int],
    slices: Sequence[EventSlice] | None,
) -> dict[int, list[Event]]:
    """Each pid's events, oldest first (only those in one of ``slices`` when given)."""
    where = "pid = ANY(%s)"
    params: list[Any] = [pids]
    if slices is not None:

        def listed(names: tuple[str, ...]) -> str:
            params.append(list(names))
            return "event = ANY(%s)"

        def since(moment: datetime) -> str:
            params.append(moment)
            return '"timestamp" >= %s'

        where += " AND " + slices_condition(slices, listed, since)
    rows = conn.execute(sql.select_events(table, schema, where, "ASC"), params).fetchall()
    return events_by_pid(rows, EventReader(schema))


def read_page(
    conn: Connection,
    table: str,
    schema: Mapping[str, AttributeType],
    pid: int,
    *,
    limit: int,
    after: EventPosition | None,
    names: Sequence[str],
) -> EventPage:
    """One page of a profile's events, newest first; see ``ProfileEngine.profile_events``."""
    where = "pid = %s"
    params: list[Any] = [pid]
    if names:
        where += " AND event = ANY(%s)"
        params.append(list(names))
    skip = 0
    if after is not None:
        where += ' AND "timestamp" <= %s'
        params.append(after.timestamp)
        skip = after.skip
    query = sql.select_events(table, schema, where, "DESC") + " LIMIT %s OFFSET %s"
    rows = conn.execute(query, [*params, limit + 1, skip]).fetchall()
    return event_page(rows, EventReader(schema), limit=limit, after=after)


def pids_between(
    table: str, ranges: Sequence[tuple[datetime, datetime]], literal: Callable[[object], str]
) -> str:
    """The distinct pids of the events timed in any of ``ranges`` (both bounds included), with
    the bounds written in as literals (the query is run through ``COPY``, which binds none);
    the index on time answers it."""
    tests = " OR ".join(
        f'("timestamp" BETWEEN {literal(low)} AND {literal(high)})' for low, high in ranges
    )
    return f"SELECT DISTINCT pid FROM {table} WHERE {tests}"
