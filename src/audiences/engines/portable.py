"""Moving a workspace between engines: the engine-neutral half of :class:`base.Portable`.

Engines read and write the rows; this module turns exported profiles and events back into rows
in the form engines bind (JSON as text, ``extra`` holding the undeclared attributes), and keeps
the positions of an event copy, so that every engine resumes a move the same way.

An event's position is its profile's pid and its rank among that profile's events in copy order
(:class:`base.EventCursor`). Imports are batches in that order, each one transaction, so what a
target holds is always a prefix of the source's order and its last cursor (the highest pid with
events, and how many it has) says exactly which events of a batch are stored already.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from audiences.engines.base import EventCursor, MovedEvent, Profile
from audiences.engines.coerce import dump_json
from audiences.errors import Conflict
from audiences.schemas.attributes import AttributeType


def profile_row(profile: Profile, schema: Mapping[str, AttributeType]) -> tuple[Any, ...]:
    """A profile as a stored row: ``rows.ROW_COLUMNS`` then the declared attributes (None
    where unset), JSON as text; attributes the schema does not declare go to ``extra``."""
    values = profile.attributes
    extra = {name: value for name, value in values.items() if name not in schema}
    declared = [_bound(kind, values.get(name)) for name, kind in schema.items()]
    text = dump_json(extra) if extra else None
    return (profile.pid, profile.external_id, text, profile.updated_at, *declared)


def event_row(moved: MovedEvent, schema: Mapping[str, AttributeType]) -> tuple[Any, ...]:
    """An event as a stored row: pid, event, timestamp, event_id, received_at, then the
    declared properties (None where unset), JSON as text."""
    pid, stored = moved
    event, values = stored.event, stored.event.properties
    properties = [_bound(kind, values.get(name)) for name, kind in schema.items()]
    return (pid, event.name, event.timestamp, stored.event_id, stored.received_at, *properties)


def _bound(kind: AttributeType, value: Any) -> Any:
    if value is None or kind is not AttributeType.JSON:
        return value
    return dump_json(value)


def positions(events: Sequence[MovedEvent], after: EventCursor | None) -> list[EventCursor]:
    """The position of each event of a batch exported after ``after``."""
    found: list[EventCursor] = []
    last = after
    for pid, _ in events:
        last = EventCursor(pid, last.count + 1 if last and last.pid == pid else 1)
        found.append(last)
    return found


def cursor_after(events: Sequence[MovedEvent], after: EventCursor | None) -> EventCursor | None:
    """The cursor following a batch exported after ``after`` (``after`` if it is empty)."""
    return positions(events, after)[-1] if events else after


def left_to_write(
    events: Sequence[MovedEvent], after: EventCursor | None, held: EventCursor | None
) -> list[MovedEvent]:
    """The events of a batch exported after ``after`` that a target whose last cursor is
    ``held`` does not hold yet; ``Conflict`` when the target misses events before the batch
    (it was written to meanwhile, or the move was resumed from a wrong place)."""
    if (after or EventCursor(0, 0)) > (held or EventCursor(0, 0)):
        raise Conflict(
            "The target engine lacks events that come before this batch: move again from the "
            "start into an empty target.",
            code="engine_move_gap",
        )
    return [
        moved
        for moved, position in zip(events, positions(events, after), strict=True)
        if held is None or position > held
    ]


def first_copies_keep_ids(
    events: Sequence[MovedEvent], stored: Mapping[str, datetime]
) -> tuple[list[MovedEvent], set[str]]:
    """The events of a batch with ``event_id`` None on each copy of an id that is not its first
    (by ``received_at``, then copy order), and the ids the target must take from the copies it
    holds (``stored``: id -> that copy's ``received_at``), whose copy in the batch came first.

    The stored copies come before the batch in copy order, so a tie on ``received_at`` keeps
    the stored one: a move resumed anywhere gives each id to the same copy.
    """
    kept = list(events)
    first = dict(stored)
    holder: dict[str, int] = {}
    taken: set[str] = set()
    for index, (pid, event) in enumerate(events):
        event_id = event.event_id
        if event_id is None:
            continue
        if event_id in first and first[event_id] <= event.received_at:
            kept[index] = (pid, replace(event, event_id=None))
            continue
        if event_id in holder:
            earlier = holder[event_id]
            kept[earlier] = (kept[earlier][0], replace(kept[earlier][1], event_id=None))
        elif event_id in first:
            taken.add(event_id)
        first[event_id], holder[event_id] = event.received_at, index
    return kept, taken
