"""A batch of events made ready for any engine: each record checked and typed, duplicates found.

Checking happens before the database sees anything, so one bad record fails alone with its
``ErrorDetail``s while the rest of the batch is written, as profile writes do
(:mod:`audiences.engines.writes`, whose flattening and coercers are reused here).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from itertools import chain, compress, count, repeat
from operator import attrgetter
from types import MappingProxyType, NoneType
from typing import Any, NamedTuple, cast

from audiences.engines.base import EventRecord, EventResult
from audiences.engines.coerce import (
    COERCERS,
    INT64_MAX,
    INT64_MIN,
    TypeMismatchError,
    to_boolean,
    to_float,
    to_integer,
    to_string,
    valid_unicode,
)
from audiences.engines.writes import canonical, check_external_id
from audiences.errors import ErrorDetail
from audiences.kit.clock import as_utc
from audiences.schemas.attributes import ATTRIBUTE_NAME, AttributeType
from audiences.schemas.events import RESERVED_EVENT_FIELDS
from audiences.schemas.memberships import MAX_ID_LENGTH

MAX_EVENT_NAME_LENGTH = 200
"""The longest event name, in characters."""

EVENT_NAME = re.compile(rf"[^\x00-\x1f]{{1,{MAX_EVENT_NAME_LENGTH}}}")
EVENT_ID = re.compile(rf"[^\x00-\x1f]{{1,{MAX_ID_LENGTH}}}")
"""What the wire contract allows (``schemas.events``), checked again for every other caller."""
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PLAIN_MAPPINGS = (dict, MappingProxyType)
"""The properties the fast path reads as they are (parsed JSON, or no properties at all)."""


class CheckedEvent(NamedTuple):
    """A record that passed: its position in the batch and its values, typed."""

    position: int
    external_id: str
    name: str
    timestamp: datetime
    event_id: str | None
    values: dict[str, Any]


def check_events(
    records: Sequence[EventRecord],
    schema: Mapping[str, AttributeType],
    types: Mapping[AttributeType, Callable[[object], Any]] = COERCERS,
) -> tuple[list[CheckedEvent], dict[int, EventResult]]:
    """The records that pass, in order, and a refusal per position of those that do not
    (``types`` checks each type's values, as in ``writes.plan_writes``).

    The whole batch is first tried column by column (:func:`_all_passing`); a batch that
    does not pass whole is tried record by record on a fast path that only says yes or no
    (its texts judged once per distinct value: a batch repeats its names and profile ids);
    a record that path does not pass is checked again in full, to say why."""
    coercers = {name: types[kind] for name, kind in schema.items()}
    every = _all_passing(records, coercers)
    if every is not None:
        return every, {}
    texts = _TextChecks()
    passed: list[CheckedEvent] = []
    refused: dict[int, EventResult] = {}
    for position, record in enumerate(records):
        external_id, name, timestamp, properties, event_id = record
        when = _utc(timestamp)
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


def _all_passing(
    records: Sequence[EventRecord], coercers: Mapping[str, Callable[[object], Any]]
) -> list[CheckedEvent] | None:
    """Every record checked, when all of them pass; None when any may not.

    The checks run on columns, mostly in C: each distinct id and name judged once, the event
    ids joined and searched once, the times' zones compared as a set, the properties' names
    against the declared ones, and each property's values by their types as a set (strings
    joined and checked once, numbers summed once) where :data:`COLUMN_CHECKS` has their type's
    check, else one by one. Values stay in the records' own mappings unless a check converts
    one (then that record's are copied). For 10,000 events this took ~22 ms of CPU where
    checking record by record took ~52 (``bench/README.md``, "Behaviour")."""
    if not records:
        return []
    external_ids, names, times, properties, event_ids = map(list, zip(*records, strict=True))
    try:
        if not (
            all(not check_external_id(value) for value in set(external_ids))
            and all(_text(EVENT_NAME, value) for value in set(names))
            and _event_ids_pass(event_ids)
            and (kinds := set(map(type, properties))) <= PLAIN_TYPES
            and (given := set().union(*properties)).issubset(coercers)
        ):
            return None
    except TypeError:  # an unhashable id or name
        return None
    if set(map(type, times)) != {datetime} or set(map(_TZINFO, times)) != {UTC}:
        times = list(map(_utc, times))
        if None in times:
            return None
    get = dict.get if kinds == {dict} else _get
    columns = {name: list(map(get, properties, repeat(name))) for name in given}
    values = list(properties)
    copied: set[int] = set()
    if sum(map(len, properties)) > sum(len(c) - c.count(None) for c in columns.values()):
        _drop_nulls(columns, values, copied)  # a null property is the same as none
    for name, column in columns.items():
        if not _column_passes(name, column, coercers[name], values, copied):
            return None
    if MappingProxyType in kinds:
        values = [dict(value) for value in values]
    rows = zip(count(), external_ids, names, times, event_ids, values)
    return list(map(tuple.__new__, repeat(CheckedEvent), rows))


def _get(properties: Mapping[str, Any], name: str) -> Any:
    return properties.get(name)


def _drop_nulls(
    columns: Mapping[str, list[Any]], values: list[Mapping[str, Any]], copied: set[int]
) -> None:
    for name, column in columns.items():
        for n in compress(count(), map(NoneType.__instancecheck__, column)):
            if name in values[n]:
                _own(values, copied, n).pop(name)


def _event_ids_pass(event_ids: list[object]) -> bool:
    kinds = set(map(type, event_ids))
    if not kinds <= {str, NoneType}:
        return False
    if str not in kinds:
        return True
    given = cast(list[str], list(filter(None, event_ids)))
    if len(given) < len(event_ids) - event_ids.count(None):  # an empty one
        return False
    joined = "".join(given)
    return (
        max(map(len, given)) <= MAX_ID_LENGTH
        and CONTROL.search(joined) is None
        and valid_unicode(joined)
    )


def _column_passes(
    name: str,
    column: list[Any],
    convert: Callable[[object], Any],
    values: list[Mapping[str, Any]],
    copied: set[int],
) -> bool:
    """Whether every value of property ``name`` (its ``column``, None where not given) fits;
    the records whose value the check converts get copies in ``values``."""
    stored, check = COLUMN_CHECKS.get(convert, (frozenset(), None))
    if check is not None and set(map(type, column)) - {NoneType} <= stored and check(column):
        return True
    try:
        for n, value in enumerate(column):
            if value is not None and (converted := convert(value)) is not value:
                _own(values, copied, n)[name] = converted
    except TypeMismatchError:
        return False
    return True


def _own(values: list[Mapping[str, Any]], copied: set[int], n: int) -> dict[str, Any]:
    """Record ``n``'s values, copied first if they are still the record's own."""
    if n not in copied:
        values[n] = dict(values[n])
        copied.add(n)
    return cast(dict[str, Any], values[n])


def _strings_fit(column: list[Any]) -> bool:
    return valid_unicode("".join(filter(None, column)))


def _floats_fit(column: list[Any]) -> bool:
    try:
        return math.isfinite(math.fsum(filter(None, column)))
    except (OverflowError, ValueError):  # a huge sum, or inf - inf: judged one by one
        return False


def _integers_fit(column: list[Any]) -> bool:
    given = list(filter(None, column))
    return not given or (min(given) >= INT64_MIN and max(given) <= INT64_MAX)


def _booleans_fit(column: list[Any]) -> bool:
    return True


ColumnCheck = tuple[frozenset[type], Callable[[list[Any]], bool]]
COLUMN_CHECKS: dict[Callable[[object], Any], ColumnCheck] = {
    to_string: (frozenset({str}), _strings_fit),
    to_float: (frozenset({float}), _floats_fit),
    to_integer: (frozenset({int}), _integers_fit),
    to_boolean: (frozenset({bool}), _booleans_fit),
}
"""By the check of one value of a type: the types its values may have already (which that
check returns unchanged) and a check of a column of them (and nulls) at once."""

PLAIN_TYPES = frozenset({dict, MappingProxyType})
CONTROL = re.compile(r"[\x00-\x1f]")
_TZINFO = attrgetter("tzinfo")
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
            known = self._names[value] = _text(EVENT_NAME, value)
        return known

    @staticmethod
    def event_id(value: object) -> bool:
        return _text(EVENT_ID, value)


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
    """The ``event_id`` of each event that has one, in order."""
    return list(filter(None, map(_EVENT_ID, events)))


def ids_to_check(events: Sequence[CheckedEvent], known_new: frozenset[str]) -> list[str]:
    """The ``event_id`` of each event that has one, but those the caller knows are not stored
    (``known_new``, an event file's generated ids on a first run): what the stored-id lookup
    reads, a scan of the workspace's events on DuckDB."""
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
    if not _text(EVENT_NAME, record.name):
        message = f"an event name is 1 to {MAX_EVENT_NAME_LENGTH} characters, none a control one"
        problems.append(ErrorDetail("event_name_invalid", message, ("event",)))
    when = _utc(record.timestamp)
    if when is None:
        message = "the timestamp must be a time with its offset, that UTC can hold"
        problems.append(ErrorDetail("timestamp_invalid", message, ("timestamp",)))
    if record.event_id is not None and not _text(EVENT_ID, record.event_id):
        message = f"an event_id is 1 to {MAX_ID_LENGTH} characters, none a control one"
        problems.append(ErrorDetail("event_id_invalid", message, ("event_id",)))
    values, more = _values(record.properties, schema, coercers)
    return when or EPOCH, values, (*problems, *more)


def _utc(timestamp: object) -> datetime | None:
    if type(timestamp) is datetime and timestamp.tzinfo is UTC:
        return timestamp
    if not isinstance(timestamp, datetime) or timestamp.tzinfo is None:
        return None
    try:
        return as_utc(timestamp)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is a year before UTC can say
        return None


def _text(pattern: re.Pattern[str], value: object) -> bool:
    return isinstance(value, str) and pattern.fullmatch(value) is not None and valid_unicode(value)


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
