"""Events in the ClickHouse engine: the statements that write and read a workspace's events.

The engine (:mod:`audiences.engines.clickhouse`) holds the lock and the workspace state; these
functions run on the client it hands them. Events are appended from one ``JSONColumns``
document and read back ordered on every column, so that ties on the time come back in one
order every time (as on DuckDB, :mod:`audiences.engines.duckdb_events`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from audiences.engines import clickhouse_sql as sql
from audiences.engines.base import EventPage, EventPosition, StoredEvent
from audiences.engines.clickhouse_client import Client
from audiences.engines.event_writes import CheckedEvent
from audiences.kit.clock import as_utc
from audiences.schemas.attributes import AttributeType
from audiences.schemas.events import Event

EVENT_COLUMNS = ["pid", "event", "`timestamp`", "event_id", "received_at"]


def stored_event_ids(client: Client, table: str, event_ids: list[str]) -> set[str]:
    """Which of ``event_ids`` the events table holds already (its bloom filter index skips
    the blocks that hold none)."""
    if not event_ids:
        return set()
    query = (
        f"SELECT DISTINCT event_id FROM {table}"
        f" WHERE event_id IN {sql.json_set(event_ids, 'String')}"
    )
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
    since: datetime | None,
) -> dict[int, list[Event]]:
    """Each pid's events, oldest first (at or after ``since`` when given)."""
    where = f"pid IN ({', '.join(map(str, pids))})"
    if since is not None:
        where += f" AND `timestamp` >= {sql.timestamp(since)}"
    query = sql.select_events(table, list(schema), where, "ASC")
    read = _EventReader(schema).event
    found: dict[int, list[Event]] = {}
    for row in sql.rows(client.query(query, "JSONCompact")):
        found.setdefault(int(row[0]), []).append(read(row))
    return found


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
    query = sql.select_events(table, list(schema), where, "DESC")
    query += f" LIMIT {int(limit) + 1} OFFSET {int(skip)}"
    rows = sql.rows(client.query(query, "JSONCompact"))
    read = _EventReader(schema)
    events = [read(row) for row in rows[:limit]]
    if len(rows) <= limit or not events:
        return EventPage(events, None)
    last = events[-1].event.timestamp
    same = sum(1 for e in events if e.event.timestamp == last)
    if after is not None and as_utc(after.timestamp) == last:
        same += skip
    return EventPage(events, EventPosition(last, same))


def pids_between(table: str, ranges: Sequence[tuple[datetime, datetime]]) -> str:
    """The bitmap of the pids with an event timed in one of ``ranges`` (bounds included);
    the ``timestamp`` minmax index skips the blocks outside every range."""
    tests = " OR ".join(
        f"(`timestamp` BETWEEN {sql.timestamp(low)} AND {sql.timestamp(high)})"
        for low, high in ranges
    )
    return f"SELECT groupBitmapState(pid) FROM {table} WHERE {tests}"


def _decoders(schema: Mapping[str, AttributeType]) -> list[tuple[int, str, Callable[[Any], Any]]]:
    first = len(sql.EVENT_SELECT)
    return [
        (position, name, sql.DECODERS.get(kind, _same))
        for position, (name, kind) in enumerate(schema.items(), start=first)
    ]


def _same(value: Any) -> Any:
    return value


class _EventReader:
    """Rows in :func:`clickhouse_sql.select_events` order as stored events, for one schema."""

    def __init__(self, schema: Mapping[str, AttributeType]) -> None:
        self.columns = _decoders(schema)

    def __call__(self, row: Sequence[Any]) -> StoredEvent:
        return StoredEvent(self.event(row), row[4], sql.read_time(row[2]))

    def event(self, row: Sequence[Any]) -> Event:
        """The event alone (what rules read)."""
        properties: dict[str, Any] = {}
        for position, name, decode in self.columns:
            value = row[position]
            if value is not None:
                properties[name] = decode(value)
        return Event(row[3], sql.read_time(row[1]), properties)
