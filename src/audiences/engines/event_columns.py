"""A batch of events checked column by column: one pass over each field and property of the
whole batch, mostly in C, that passes the batch whole or says it may not.

This is the fast path of :func:`audiences.engines.event_writes.check_events`: most batches are
clean, and checking each distinct value once, or a column of numbers with one sum, costs a
fraction of checking record by record. It only says yes or no; a batch it does not pass is
checked record by record (``event_writes``), which finds the refused records and says why, so
every answer is the record-by-record check's.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from itertools import compress, count, repeat
from operator import attrgetter
from types import MappingProxyType, NoneType
from typing import Any, cast

from audiences.engines.base import EventRecord
from audiences.engines.coerce import (
    INT64_MAX,
    INT64_MIN,
    TypeMismatchError,
    to_boolean,
    to_event_float,
    to_float,
    to_integer,
    to_string,
    valid_unicode,
)
from audiences.engines.event_records import EVENT_NAME, CheckedEvent, utc, valid_text
from audiences.engines.writes import check_external_id
from audiences.schemas.events import FLOAT_SUM_LIMIT
from audiences.schemas.memberships import MAX_ID_LENGTH

PLAIN_MAPPINGS = (dict, MappingProxyType)
"""The properties read as they are (parsed JSON, or no properties at all, which
``EventRecord`` gives as an empty ``MappingProxyType``); any other kind of mapping is left to
the record-by-record check."""
_PLAIN_KINDS = frozenset(PLAIN_MAPPINGS)
CONTROL = re.compile(r"[\x00-\x1f]")
"""A control character, which no event id may hold (searched once in all ids joined)."""
_TZINFO = attrgetter("tzinfo")


def check_columns(
    records: Sequence[EventRecord], coercers: Mapping[str, Callable[[object], Any]]
) -> tuple[list[CheckedEvent], set[int]] | None:
    """The records checked, when only property values may fail: those that pass, in order,
    and the positions of those with a value that does not fit its type (to be checked again
    record by record, to say why); None when anything else may fail (an id, a name, a time,
    an undeclared or nested property): then the whole batch is checked record by record.

    The checks run on columns, mostly in C: each distinct id and name judged once, the event
    ids joined and searched once, the times' zones compared as a set, the properties' names
    against the declared ones, and each property's values by their types as a set (strings
    joined and checked once, numbers summed once) where :data:`COLUMN_CHECKS` has their type's
    check, else one by one. Values stay in the records' own mappings unless a check converts
    one (then that record's are copied). For 10,000 events this took ~22 ms of CPU where
    checking record by record took ~52 (``bench/README.md``, "Behaviour"); a batch with one
    value of the wrong type costs about as much as a clean one."""
    if not records:
        return [], set()
    external_ids, names, times, properties, event_ids = map(list, zip(*records, strict=True))
    try:
        if not (
            all(not check_external_id(value) for value in set(external_ids))
            and all(valid_text(EVENT_NAME, value) for value in set(names))
            and _event_ids_pass(event_ids)
            and (kinds := set(map(type, properties))) <= _PLAIN_KINDS
            and (given := set().union(*properties)).issubset(coercers)
        ):
            return None
    except TypeError:  # an unhashable id or name
        return None
    if set(map(type, times)) != {datetime} or set(map(_TZINFO, times)) != {UTC}:
        times = list(map(utc, times))
        if None in times:
            return None
    get = dict.get if kinds == {dict} else _get
    columns = {name: list(map(get, properties, repeat(name))) for name in given}
    values = list(properties)
    copied: set[int] = set()
    if sum(map(len, properties)) > sum(len(c) - c.count(None) for c in columns.values()):
        _drop_nulls(columns, values, copied)  # a null property is the same as none
    failing: set[int] = set()
    for name, column in columns.items():
        failing.update(_column_failures(name, column, coercers[name], values, copied))
    if MappingProxyType in kinds:
        values = [dict(value) for value in values]
    rows = zip(count(), external_ids, names, times, event_ids, values)
    checked = list(map(tuple.__new__, repeat(CheckedEvent), rows))
    if failing:
        checked = [event for event in checked if event.position not in failing]
    return checked, failing


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


def _column_failures(
    name: str,
    column: list[Any],
    convert: Callable[[object], Any],
    values: list[Mapping[str, Any]],
    copied: set[int],
) -> list[int]:
    """The positions whose value of property ``name`` (its ``column``, None where not given)
    does not fit; the records whose value the check converts get copies in ``values``."""
    stored, check = COLUMN_CHECKS.get(convert, (frozenset(), None))
    if check is not None and set(map(type, column)) - {NoneType} <= stored and check(column):
        return []
    failing: list[int] = []
    for n, value in enumerate(column):
        if value is None:
            continue
        try:
            converted = convert(value)
        except TypeMismatchError:
            failing.append(n)
            continue
        if converted is not value:
            _own(values, copied, n)[name] = converted
    return failing


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


def _event_floats_fit(column: list[Any]) -> bool:
    """Finite, and within ±``FLOAT_SUM_LIMIT`` (an event's FLOAT: ``coerce.to_event_float``)."""
    given = list(filter(None, column))
    if not given:
        return True
    return min(given) >= -FLOAT_SUM_LIMIT and max(given) <= FLOAT_SUM_LIMIT and _floats_fit(given)


def _integers_fit(column: list[Any]) -> bool:
    given = list(filter(None, column))
    return not given or (min(given) >= INT64_MIN and max(given) <= INT64_MAX)


def _booleans_fit(column: list[Any]) -> bool:
    return True


ColumnCheck = tuple[frozenset[type], Callable[[list[Any]], bool]]
"""The types a column's values may have to be checked at once, and that check of a column."""
COLUMN_CHECKS: dict[Callable[[object], Any], ColumnCheck] = {
    to_string: (frozenset({str}), _strings_fit),
    to_float: (frozenset({float}), _floats_fit),
    to_event_float: (frozenset({float}), _event_floats_fit),
    to_integer: (frozenset({int}), _integers_fit),
    to_boolean: (frozenset({bool}), _booleans_fit),
}
"""By the check of one value of a type: the types its values may have already (which that
check returns unchanged) and a check of a column of them (and nulls) at once."""
