"""A batch of events made ready for any engine: each record checked and typed, duplicates found.

Checking happens before the database sees anything, so one bad record fails alone with its
``ErrorDetail``s while the rest of the batch is written, as profile writes do
(:mod:`audiences.engines.writes`, whose flattening and coercers are reused here).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from itertools import chain, repeat
from operator import attrgetter
from typing import Any, cast

from audiences.engines.base import EventRecord, EventResult
from audiences.engines.coerce import COERCERS, OutOfRangeError, TypeMismatchError, to_event_float
from audiences.engines.event_columns import PLAIN_MAPPINGS, check_columns
from audiences.engines.event_records import (
    EVENT_ID,
    EVENT_NAME,
    MAX_EVENT_NAME_LENGTH,
    utc,
    valid_text,
)
from audiences.engines.event_records import CheckedEvent as CheckedEvent
from audiences.engines.writes import canonical, check_external_id
from audiences.errors import ErrorDetail
from audiences.schemas.attributes import ATTRIBUTE_NAME, AttributeType
from audiences.schemas.events import RESERVED_EVENT_FIELDS
from audiences.schemas.memberships import MAX_ID_LENGTH

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
"""The time of a refused record whose own time is not one (never written)."""


def check_events(
    records: Sequence[EventRecord],
    schema: Mapping[str, AttributeType],
    types: Mapping[AttributeType, Callable[[object], Any]] = COERCERS,
) -> tuple[list[CheckedEvent], dict[int, EventResult]]:
    """The records that pass, in order, and a refusal per position of those that do not
    (``types`` checks each type's values, as in ``writes.plan_writes``).

    The whole batch is first checked column by column (``event_columns.check_columns``),
    the records with a value of the wrong type checked again in full, to say why; a batch
    that fails anything else is tried record by record on a fast path that only says yes or
    no (its texts judged once per distinct value: a batch repeats its names and profile ids);
    a record that path does not pass is checked again in full, to say why. A FLOAT property's
    values are also held within ±1e12 (``coerce.to_event_float``)."""
    coercers = event_coercers(schema, types)
    by_columns = check_columns(records, coercers)
    if by_columns is not None:
        passed, failing = by_columns
        refused = {n: _refusal(records[n], schema, coercers) for n in sorted(failing)}
        if all(result.errors for result in refused.values()):  # else the records decide
            return passed, refused
    return _by_records(records, schema, coercers)


def event_coercers(
    schema: Mapping[str, AttributeType],
    types: Mapping[AttributeType, Callable[[object], Any]] = COERCERS,
) -> dict[str, Callable[[object], Any]]:
    """The check of each property's values: its type's in ``types``, a FLOAT's narrowed to
    ±1e12 (``coerce.to_event_float``)."""
    return {
        name: to_event_float if kind is AttributeType.FLOAT else types[kind]
        for name, kind in schema.items()
    }


def _by_records(
    records: Sequence[EventRecord],
    schema: Mapping[str, AttributeType],
    coercers: Mapping[str, Callable[[object], Any]],
) -> tuple[list[CheckedEvent], dict[int, EventResult]]:
    """:func:`check_events` record by record, for a batch the columns cannot judge."""
    texts = _TextChecks()
    passed: list[CheckedEvent] = []
    refused: dict[int, EventResult] = {}
    for position, record in enumerate(records):
        external_id, name, timestamp, properties, event_id = record
        when = utc(timestamp)
        values = _plain_values(properties, coercers)
        if (
            when is not None
            and values is not None
            and texts.external_id(external_id)
            and texts.name(name)
            and (event_id is None or texts.event_id(event_id))
        ):
            passed.append(CheckedEvent(position, external_id, name, when, event_id, values))
            continue
        when, values, problems = _check(record, schema, coercers)
        if problems:
            refused[position] = EventResult(str(external_id), None, errors=problems)
        else:
            passed.append(CheckedEvent(position, external_id, name, when, event_id, values))
    return passed, refused


_EXTERNAL_ID, _EVENT_ID = attrgetter("external_id"), attrgetter("event_id")


class _TextChecks:
    """Whether an external id, event name or event id is valid, each distinct value judged
    once (the answers of :func:`_check`'s checks, without the problems)."""

    def __init__(self) -> None:
        self._ids: dict[object, bool] = {}
        self._names: dict[object, bool] = {}

    def external_id(self, value: object) -> bool:
        known = self._ids.get(value) if isinstance(value, str) else False
        if known is None:
            known = self._ids[value] = not check_external_id(value)
        return known

    def name(self, value: object) -> bool:
        known = self._names.get(value) if isinstance(value, str) else False
        if known is None:
            known = self._names[value] = valid_text(EVENT_NAME, value)
        return known

    @staticmethod
    def event_id(value: object) -> bool:
        return valid_text(EVENT_ID, value)


def _refusal(
    record: EventRecord, schema: Mapping[str, AttributeType], coercers: Mapping[str, Any]
) -> EventResult:
    """The result of a record checked in full: its problems (none if it passes after all)."""
    return EventResult(str(record.external_id), None, errors=_check(record, schema, coercers)[2])


def _plain_values(
    properties: object, coercers: Mapping[str, Callable[[object], Any]]
) -> dict[str, Any] | None:
    """The typed values of flat properties that are all declared and fit their types; None
    when anything needs :func:`_values` (nesting, an undeclared name, a mismatch)."""
    if type(properties) not in PLAIN_MAPPINGS:
        return None
    given = cast(Mapping[str, Any], properties)
    if dict in map(type, given.values()):
        return None
    values: dict[str, Any] = {}
    try:
        for key, value in given.items():
            if value is not None:
                values[key] = coercers[key](value)
    except (KeyError, TypeMismatchError):
        return None
    return values


def event_ids(events: Sequence[CheckedEvent]) -> list[str]:
    """The ``event_id`` of each event that has one, in order (None and ``""`` are both
    dropped; a checked event's id is never ``""``, which ``EVENT_ID`` refuses)."""
    return list(filter(None, map(_EVENT_ID, events)))


def ids_to_check(events: Sequence[CheckedEvent], known_new: frozenset[str]) -> list[str]:
    """The ``event_id`` of each event that has one, but those the caller knows are not stored
    (``known_new``, an event file's generated ids on a first run): what the stored-id lookup
    reads, a scan of the workspace's events on ClickHouse."""
    ids = event_ids(events)
    return [i for i in ids if i not in known_new] if known_new else ids


def external_ids(*events: Sequence[CheckedEvent]) -> list[str]:
    """The external ids of ``events``, each once, in order of first appearance."""
    return list(dict.fromkeys(map(_EXTERNAL_ID, chain(*events))))


def split_duplicates(
    events: Sequence[CheckedEvent], stored: set[str]
) -> tuple[list[CheckedEvent], list[CheckedEvent]]:
    """The events to write and the duplicates: an ``event_id`` already ``stored``, or given by
    an earlier event of the batch (the first copy is written)."""
    ids = event_ids(events)
    if stored.isdisjoint(ids) and len(set(ids)) == len(ids):  # no duplicate: a C pass
        return list(events), []
    seen = set(stored)
    fresh: list[CheckedEvent] = []
    duplicates: list[CheckedEvent] = []
    for event in events:
        if event.event_id is None:
            fresh.append(event)
        elif event.event_id in seen:
            duplicates.append(event)
        else:
            seen.add(event.event_id)
            fresh.append(event)
    return fresh, duplicates


def batch_results(
    count: int,
    refused: Mapping[int, EventResult],
    fresh: Sequence[CheckedEvent],
    duplicates: Sequence[CheckedEvent],
    pids: Mapping[str, int],
) -> list[EventResult]:
    """A result per record of a batch of ``count``, in order: its refusal, or its profile's
    pid (``duplicate`` for the ``duplicates``)."""
    if len(fresh) == count:  # the common case: every record written, in order
        external_ids = list(map(_EXTERNAL_ID, fresh))
        rows = zip(external_ids, map(pids.__getitem__, external_ids), repeat(False), repeat(()))
        return list(map(tuple.__new__, repeat(EventResult), rows))
    found: list[EventResult | None] = [None] * count
    for position, result in refused.items():
        found[position] = result
    for e in fresh:
        found[e.position] = EventResult(e.external_id, pids[e.external_id])
    for e in duplicates:
        found[e.position] = EventResult(e.external_id, pids[e.external_id], duplicate=True)
    return [result for result in found if result is not None]


def _check(
    record: EventRecord, schema: Mapping[str, AttributeType], coercers: Mapping[str, Any]
) -> tuple[datetime, dict[str, Any], tuple[ErrorDetail, ...]]:
    problems = check_external_id(record.external_id)
    if not valid_text(EVENT_NAME, record.name):
        message = f"an event name is 1 to {MAX_EVENT_NAME_LENGTH} characters, none a control one"
        problems.append(ErrorDetail("event_name_invalid", message, ("event",)))
    when = utc(record.timestamp)
    if when is None:
        message = "the timestamp must be a time with its offset, that UTC can hold"
        problems.append(ErrorDetail("timestamp_invalid", message, ("timestamp",)))
    if record.event_id is not None and not valid_text(EVENT_ID, record.event_id):
        message = f"an event_id is 1 to {MAX_ID_LENGTH} characters, none a control one"
        problems.append(ErrorDetail("event_id_invalid", message, ("event_id",)))
    values, more = _values(record.properties, schema, coercers)
    return when or EPOCH, values, (*problems, *more)


def _values(
    properties: object, schema: Mapping[str, AttributeType], coercers: Mapping[str, Any]
) -> tuple[dict[str, Any], list[ErrorDetail]]:
    problems: list[ErrorDetail] = []
    if not isinstance(properties, Mapping):
        problems.append(ErrorDetail("properties_invalid", "properties must be an object", ()))
        return {}, problems
    flat, repeated = canonical(properties, schema)
    problems.extend(
        ErrorDetail("property_repeated", p.message, ("properties", *p.location[1:]))
        for p in repeated
    )
    values: dict[str, Any] = {}
    for key, value in flat.items():
        if value is None:
            continue  # a null property is the same as one not sent
        convert = coercers.get(key)
        if convert is None:
            problems.append(_undeclared(key))
            continue
        try:
            values[key] = convert(value)
        except OutOfRangeError as beyond:
            message = f"{key}: {beyond}"
            problems.append(ErrorDetail("property_out_of_range", message, ("properties", key)))
        except TypeMismatchError as mismatch:
            message = f"{key}: {mismatch}"
            problems.append(ErrorDetail("property_type_mismatch", message, ("properties", key)))
    return values, problems


def _undeclared(key: str) -> ErrorDetail:
    """Why an undeclared property is refused: a name no rule could write (nor any column be
    named), or one that is simply not declared (a strict workspace; or past the limit)."""
    shown = key.encode("utf-8", "backslashreplace").decode()
    if NAME.fullmatch(key) is None or key in RESERVED_EVENT_FIELDS:
        message = (
            f"{shown}: a property name is lowercase letters, digits and '_' (dotted for nested"
            " objects), and not a built-in field"
        )
        return ErrorDetail("property_name_invalid", message, ("properties", shown))
    message = f"{shown}: not a declared event property"
    return ErrorDetail("property_undeclared", message, ("properties", shown))


NAME = re.compile(ATTRIBUTE_NAME)
