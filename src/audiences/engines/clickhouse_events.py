"""Events in the ClickHouse engine: the statements that write and read a workspace's events.

The engine (:mod:`audiences.engines.clickhouse`) holds the lock and the workspace state; these
functions run on the client it hands them. Events are appended from one ``JSONColumns``
document and read back ordered on every column, so that ties on the time come back in one
order every time (as on DuckDB, :mod:`audiences.engines.duckdb_events`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from audiences.engines import clickhouse_sql as sql
from audiences.engines import rows
from audiences.engines.base import (
    EventPage,
    EventPosition,
    EventResult,
    EventSlice,
    MovedEvent,
    slices_condition,
)
from audiences.engines.clickhouse_client import Client
from audiences.engines.coerce import dump_json
from audiences.engines.event_writes import CheckedEvent
from audiences.errors import ErrorDetail
from audiences.kit.clock import as_utc
from audiences.schemas.attributes import AttributeType
from audiences.schemas.events import Event

EVENT_COLUMNS = ["pid", "event", "`timestamp`", "event_id", "received_at"]


def stored_event_ids(
    client: Client, table: str, event_ids: list[str], since: datetime | None = None
) -> set[str]:
    """Which of ``event_ids`` the events table holds already (received at ``since`` or later,
    when given). The bloom filter index on ``event_id`` skips the blocks that hold none;
    ``since`` skips nothing (the table is sorted by pid and time, with no index on
    ``received_at``), it only leaves out copies received before the window."""
    if not event_ids:
        return set()
    query = (
        f"SELECT DISTINCT event_id FROM {table}"
        f" WHERE event_id IN {sql.json_set(event_ids, 'String')}"
    )
    if since is not None:
        query += f" AND received_at >= {sql.timestamp(since)}"
    return {row[0] for row in sql.rows(client.query(query, "JSONCompact"))}


def insert(
    client: Client,
    table: str,
    schema: Mapping[str, AttributeType],
    events: Sequence[CheckedEvent],
    pids: Mapping[str, int],
    received_at: datetime,
) -> None:
    """Append ``events``, each under the pid of its external id."""
    received = as_utc(received_at).isoformat()
    columns: dict[str, list[Any]] = {
        "pid": [pids[e.external_id] for e in events],
        "event": [e.name for e in events],
        "timestamp": [e.timestamp.isoformat() for e in events],
        "event_id": [e.event_id for e in events],
        "received_at": [received] * len(events),
    }
    for name, kind in schema.items():
        columns[name] = sql.encode([e.values.get(name) for e in events], kind)
    names = [*EVENT_COLUMNS, *map(sql.quote, schema)]
    client.insert(table, names, sql.document(columns))


def read_of(
    client: Client,
    table: str,
    schema: Mapping[str, AttributeType],
    pids: list[int],
    slices: Sequence[EventSlice] | None,
) -> dict[int, list[Event]]:
    """Each pid's events, oldest first (only those in one of ``slices`` when given)."""
    where = f"pid IN ({', '.join(map(str, pids))})"
    if slices is not None:
        where += " AND " + slices_condition(
            slices,
            lambda names: f"has({sql.json_list(list(names), 'String')}, event)",
            lambda since: f"`timestamp` >= {sql.timestamp(since)}",
        )
    return rows.events_by_pid(_read(client, table, schema, where, "ASC"), rows.EventReader(schema))


def read_page(
    client: Client,
    table: str,
    schema: Mapping[str, AttributeType],
    pid: int,
    *,
    limit: int,
    after: EventPosition | None,
    names: Sequence[str],
) -> EventPage:
    """One page of a profile's events, newest first; see ``ProfileEngine.profile_events``
    (and ``duckdb_events.read_page``, whose paging this is)."""
    where = f"pid = {int(pid)}"
    if names:
        where += f" AND has({sql.json_list(list(names), 'String')}, event)"
    skip = 0
    if after is not None:
        where += f" AND `timestamp` <= {sql.timestamp(after.timestamp)}"
        skip = after.skip
    page = f" LIMIT {int(limit) + 1} OFFSET {int(skip)}"
    found = _read(client, table, schema, where, "DESC", page)
    return rows.event_page(found, rows.EventReader(schema), limit=limit, after=after)


def _read(
    client: Client,
    table: str,
    schema: Mapping[str, AttributeType],
    where: str,
    order: str,
    tail: str = "",
) -> list[list[Any]]:
    """Event rows (:func:`clickhouse_sql.select_events`), values as the engines store them."""
    decode = sql.event_rows(schema)
    query = sql.select_events(table, list(schema), where, order) + tail
    return [decode(row) for row in sql.rows(client.query(query, "JSONCompact"))]


def pids_between(table: str, ranges: Sequence[tuple[datetime, datetime]]) -> str:
    """The bitmap of the pids with an event timed in one of ``ranges`` (bounds included);
    the ``timestamp`` minmax index skips the blocks outside every range."""
    tests = " OR ".join(
        f"(`timestamp` BETWEEN {sql.timestamp(low)} AND {sql.timestamp(high)})"
        for low, high in ranges
    )
    return f"SELECT groupBitmapState(pid) FROM {table} WHERE {tests}"


def split_out_of_range(
    events: list[CheckedEvent],
) -> tuple[list[CheckedEvent], dict[int, EventResult]]:
    """The events ClickHouse can store, and a refusal for each timed outside its range
    (``clickhouse_sql.in_range``)."""
    kept: list[CheckedEvent] = []
    refused: dict[int, EventResult] = {}
    for event in events:
        if sql.in_range(event.timestamp):
            kept.append(event)
        else:
            message = "the timestamp must lie between 1900-01-01 and 2299-12-31 (ClickHouse)"
            detail = ErrorDetail("timestamp_invalid", message, ("timestamp",))
            refused[event.position] = EventResult(event.external_id, None, errors=(detail,))
    return kept, refused


def insert_moved(
    client: Client, table: str, schema: Mapping[str, AttributeType], moved: Sequence[MovedEvent]
) -> None:
    """Append events copied from another engine, each with its own pid, id and receipt time
    (``base.Portable.import_events``)."""
    columns: dict[str, list[Any]] = {
        "pid": [pid for pid, _ in moved],
        "event": [stored.event.name for _, stored in moved],
        "timestamp": [stored.event.timestamp.isoformat() for _, stored in moved],
        "event_id": [stored.event_id for _, stored in moved],
        "received_at": [as_utc(stored.received_at).isoformat() for _, stored in moved],
    }
    for name, kind in schema.items():
        values = [stored.event.properties.get(name) for _, stored in moved]
        if kind is AttributeType.JSON:
            values = [None if value is None else dump_json(value) for value in values]
        columns[name] = sql.encode(values, kind)
    names = [*EVENT_COLUMNS, *map(sql.quote, schema)]
    client.insert(table, names, sql.document(columns))


def export(
    client: Client,
    table: str,
    schema: Mapping[str, AttributeType],
    start: int,
    skip: int,
    limit: int,
) -> list[MovedEvent]:
    """Events in copy order from ``start`` on, ``skip`` of them left out (see
    :func:`clickhouse_sql.export_events`), each with its pid."""
    decode, read = sql.event_rows(schema), rows.EventReader(schema)
    query = sql.export_events(table, list(schema), start, skip, limit)
    found = [decode(row) for row in sql.rows(client.query(query, "JSONCompact"))]
    return [(int(row[0]), read(row)) for row in found]
