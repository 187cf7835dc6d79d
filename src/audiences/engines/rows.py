"""Stored rows read back as profiles and events, the same way on every engine.

Engines select a profile as :data:`ROW_COLUMNS` then its declared attributes, and an event as
:data:`EVENT_SELECT` then its declared properties, JSON as text; the readers here turn those
rows into :class:`Profile` and :class:`StoredEvent`, so every engine answers alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from audiences.engines.base import EventPage, EventPosition, Profile, StoredEvent
from audiences.engines.writes import canonical
from audiences.kit.clock import as_utc
from audiences.schemas.attributes import AttributeType
from audiences.schemas.events import Event

ROW_COLUMNS = ("pid", "external_id", "extra", "updated_at")
"""The columns every profile row starts with, before the declared attributes."""

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

EVENT_SELECT = ("pid", '"timestamp"', "received_at", "event", "event_id")
"""The built-in columns of an event read back, in the order events are sorted by."""

DECODERS: dict[AttributeType, Callable[[Any], Any]] = {
    AttributeType.JSON: orjson.loads,
    AttributeType.TIMESTAMP: as_utc,
}
"""How a stored value becomes a profile's or an event's: JSON text parsed, timestamps in UTC."""


class ProfileReader:
    """Rows in :data:`ROW_COLUMNS` order then the attributes of one schema, as profiles: the
    per-column decisions are made once per batch, not once per value."""

    def __init__(self, schema: Mapping[str, AttributeType]) -> None:
        self.schema = schema
        self.columns = [
            (position, name, DECODERS.get(kind))
            for position, (name, kind) in enumerate(schema.items(), start=len(ROW_COLUMNS))
        ]

    def __call__(self, row: Sequence[Any]) -> Profile:
        pid, external_id, extra, updated_at = row[:4]
        attributes: dict[str, Any] = {}
        if extra:
            # A declared name left in extra (its value did not fit the type) stays hidden, so
            # that a profile reads the same to a Python predicate as to the SQL rule. Extras
            # are read in canonical form: one written before nested objects were flattened
            # must not show a nested value SQL does not see.
            schema = self.schema
            flat, _ = canonical(orjson.loads(extra), {})
            attributes = {k: v for k, v in flat.items() if k not in schema}
        for position, name, decode in self.columns:
            value = row[position]
            if value is not None:
                attributes[name] = value if decode is None else decode(value)
        return Profile(int(pid), external_id, attributes, as_utc(updated_at))


class EventReader:
    """Rows in :data:`EVENT_SELECT` order then the properties of one schema, as stored events."""

    def __init__(self, schema: Mapping[str, AttributeType]) -> None:
        first = len(EVENT_SELECT)
        self.columns = [
            (position, name, DECODERS.get(kind))
            for position, (name, kind) in enumerate(schema.items(), start=first)
        ]

    def __call__(self, row: Sequence[Any]) -> StoredEvent:
        return StoredEvent(self.event(row), row[4], as_utc(row[2]))

    def event(self, row: Sequence[Any]) -> Event:
        """The event alone (what rules read; streaming reads many, so no more is built)."""
        properties: dict[str, Any] = {}
        for position, name, decode in self.columns:
            value = row[position]
            if value is not None:
                properties[name] = value if decode is None else decode(value)
        return Event(row[3], as_utc(row[1]), properties)


def events_by_pid(rows: Sequence[Sequence[Any]], reader: EventReader) -> dict[int, list[Event]]:
    """Rows ordered by pid then time, as each pid's events in that order."""
    found: dict[int, list[Event]] = {}
    for row in rows:
        found.setdefault(int(row[0]), []).append(reader.event(row))
    return found


RULE_SELECT = ("pid", "micros", "event")
"""The columns of an event read for rules (:func:`rule_events_by_pid`), before its properties:
the time as microseconds since 1970 (UTC), which Python turns into a time three times faster
than a driver turns a zoned timestamp into one, and no ids (rules never read them)."""


def rule_events_by_pid(
    rows: Sequence[Sequence[Any]], schema: Mapping[str, AttributeType]
) -> dict[int, list[Event]]:
    """Rows in :data:`RULE_SELECT` order then the properties of ``schema``, ordered by pid then
    time, as each pid's events in that order."""
    columns = [
        (position, name, DECODERS.get(kind))
        for position, (name, kind) in enumerate(schema.items(), start=len(RULE_SELECT))
    ]
    found: dict[int, list[Event]] = {}
    for row in rows:
        properties: dict[str, Any] = {}
        for position, name, decode in columns:
            value = row[position]
            if value is not None:
                properties[name] = value if decode is None else decode(value)
        moment = EPOCH + timedelta(microseconds=row[1])
        found.setdefault(row[0], []).append(Event(row[2], moment, properties))
    return found


def event_page(
    rows: Sequence[Sequence[Any]],
    reader: EventReader,
    *,
    limit: int,
    after: EventPosition | None,
) -> EventPage:
    """A page from up to ``limit + 1`` rows read newest first after skipping ``after.skip``
    events of ``after.timestamp``; the next position counts the events of the page's last time
    (and those skipped before, when the page did not leave that time)."""
    events = [reader(row) for row in rows[:limit]]
    if len(rows) <= limit or not events:
        return EventPage(events, None)
    last = events[-1].event.timestamp
    same = sum(1 for e in events if e.event.timestamp == last)
    if after is not None and as_utc(after.timestamp) == last:
        same += after.skip
    return EventPage(events, EventPosition(last, same))
