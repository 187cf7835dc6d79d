"""The SQL the ClickHouse engine runs: table layout, column types, literals and bitmaps.

Identifiers are quoted and values written as literals by sqlglot (ClickHouse strings escape
backslashes, which sqlglot knows); lists of values travel as one JSON text literal read by
``JSONExtract``, and rows as ``JSONColumns`` documents. The only text that is not ours is the
rule compiler's WHERE-SQL, checked by ``duckdb_sql.checked_condition`` for this dialect.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import orjson
import sqlglot
from pyroaring import AbstractBitMap, BitMap
from sqlglot import exp

from audiences.engines import rows as rows_module
from audiences.engines.base import pids_to_bitmap
from audiences.engines.coerce import TypeMismatchError
from audiences.errors import Unprocessable
from audiences.schemas.attributes import AttributeType

DIALECT = "clickhouse"

COLUMN_TYPES: dict[AttributeType, str] = {
    AttributeType.STRING: "Nullable(String)",
    AttributeType.INTEGER: "Nullable(Int64)",
    AttributeType.FLOAT: "Nullable(Float64)",
    AttributeType.BOOLEAN: "Nullable(Bool)",
    AttributeType.TIMESTAMP: "Nullable(DateTime64(6, 'UTC'))",
    AttributeType.DATE: "Nullable(Date32)",
    # Arrays cannot be Nullable in ClickHouse; a one-type Variant can be NULL, and keeps
    # dotted list columns (``p.tags``) from being read as one Nested structure whose arrays
    # must have equal lengths.
    AttributeType.STRING_LIST: "Variant(Array(String))",
    AttributeType.NUMBER_LIST: "Variant(Array(Float64))",
    AttributeType.JSON: "Nullable(String)",
}
"""The ClickHouse column type of each attribute type (JSON is text, marked by a comment)."""

JSON_COMMENT = "json"
"""The column comment that tells a JSON attribute from a string one."""

ATTRIBUTE_TYPES: dict[tuple[str, str], AttributeType] = {
    (sql, JSON_COMMENT if kind is AttributeType.JSON else ""): kind
    for kind, sql in COLUMN_TYPES.items()
}
"""Attribute type by a column's (type, comment) in ``system.columns``: the columns are the
truth, as on DuckDB."""

VERSION, DELETED = "Version", "Deleted"
"""The bookkeeping columns of a profile row (capitalised: no attribute can be named so)."""

EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(2299, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
"""The times ``DateTime64`` and ``Date32`` hold; a value outside fails its record."""


def quote(name: str) -> str:
    """A ClickHouse identifier for ``name``, quoted by sqlglot."""
    return exp.to_identifier(name, quoted=True).sql(dialect=DIALECT)


def table(database: str, name: str) -> str:
    """A quoted ``database.table``."""
    return f"{quote(database)}.{quote(name)}"


def literal(value: object) -> str:
    """A value as a ClickHouse literal: text escaped by sqlglot, times in UTC."""
    if isinstance(value, datetime):
        return timestamp(value)
    if isinstance(value, date):
        return f"toDate32({_string(value.isoformat())})"
    if value is None or isinstance(value, bool | int | float | str):
        return exp.convert(value).sql(dialect=DIALECT)
    raise TypeError(f"cannot bind {type(value).__name__} to ClickHouse SQL")


def timestamp(moment: datetime) -> str:
    """An instant as ``DateTime64(6, 'UTC')``."""
    text = moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return f"toDateTime64({_string(text)}, 6, 'UTC')"


def _string(text: str) -> str:
    return exp.Literal.string(text).sql(dialect=DIALECT)


def json_list(values: Sequence[Any], element: str) -> str:
    """Many values as one literal: JSON text read by ``JSONExtract`` into ``Array(element)``
    (one escaped literal, however many values; ``element`` is ours, never a client's)."""
    return f"JSONExtract({_string(orjson.dumps(list(values)).decode())}, 'Array({element})')"


def json_set(values: Sequence[Any], element: str) -> str:
    """Many values as the right side of ``IN`` (a subquery over :func:`json_list`): the
    sorting key and the bloom filter indexes skip the blocks without any of them, which a
    ``has(…)`` test does not let them do."""
    return f"(SELECT arrayJoin({json_list(values, element)}))"


def in_range(moment: datetime | date) -> bool:
    """Whether ClickHouse's ``DateTime64``/``Date32`` can hold a time or a date."""
    if isinstance(moment, datetime):
        return EARLIEST <= moment <= LATEST
    return EARLIEST.date() <= moment <= LATEST.date()


def ranged(convert: Callable[[object], Any]) -> Callable[[object], Any]:
    """A coercer that also refuses times ClickHouse cannot store (documented in
    docs/engines.md), so the record fails alone instead of the whole insert."""

    def checked(value: object) -> Any:
        result = convert(value)
        if not in_range(result):
            raise TypeMismatchError(
                f"{result.isoformat()} is outside 1900-01-01..2299-12-31, the range ClickHouse"
                " stores"
            )
        return result

    return checked


def create_profiles(name: str) -> str:
    """A workspace's profile table: versioned rows, the latest version of a pid wins (reads
    say FINAL), and a row with ``Deleted`` = 1 is a tombstone that hides the profile."""
    return (
        f"CREATE TABLE IF NOT EXISTS {name} (pid UInt32, external_id String,"
        " extra Nullable(String), updated_at DateTime64(6, 'UTC'),"
        f" {VERSION} UInt64, {DELETED} UInt8,"
        " INDEX external_ids external_id TYPE bloom_filter GRANULARITY 1)"
        f" ENGINE = ReplacingMergeTree({VERSION}, {DELETED}) ORDER BY pid"
    )


def create_events(name: str) -> str:
    """A workspace's events, ordered for scans by profile and time (the contract of #13)."""
    return (
        f"CREATE TABLE IF NOT EXISTS {name} (pid UInt32, event String,"
        " `timestamp` DateTime64(6, 'UTC'), event_id Nullable(String),"
        " received_at DateTime64(6, 'UTC'),"
        " INDEX event_ids event_id TYPE bloom_filter GRANULARITY 1,"
        " INDEX times `timestamp` TYPE minmax GRANULARITY 1)"
        " ENGINE = MergeTree ORDER BY (pid, `timestamp`)"
    )


def create_counter(name: str) -> str:
    """The high-water mark of the pids given out (pids are never reused, even once a
    tombstone is merged away)."""
    return f"CREATE TABLE IF NOT EXISTS {name} (high UInt32) ENGINE = MergeTree ORDER BY tuple()"


def add_column(name: str, attribute: str, kind: AttributeType) -> str:
    """The online DDL that declares one attribute (or event property)."""
    comment = f" COMMENT '{JSON_COMMENT}'" if kind is AttributeType.JSON else ""
    return (
        f"ALTER TABLE {name} ADD COLUMN IF NOT EXISTS {quote(attribute)}"
        f" {COLUMN_TYPES[kind]}{comment}"
    )


ROW_COLUMNS = rows_module.ROW_COLUMNS
"""The columns every profile row starts with, before the declared attributes."""


def select_rows(name: str, attributes: Sequence[str], where: str) -> str:
    """The live profiles' rows: :data:`ROW_COLUMNS`, then the declared attributes."""
    columns = ", ".join([*ROW_COLUMNS, *map(quote, attributes)])
    return f"SELECT {columns} FROM {name} FINAL WHERE {where}"


EVENT_SELECT = ("pid", "`timestamp`", "received_at", "event", "event_id")
"""The built-in columns of an event read back, in ``rows.EVENT_SELECT``'s order (the order
events are sorted by)."""


def select_events(name: str, properties: Sequence[str], where: str, order: str) -> str:
    """Events, ``order`` (``ASC``/``DESC``) on every column so that ties come back in one
    order each time (as ``duckdb_sql.select_events``)."""
    columns = ", ".join([*EVENT_SELECT, *map(quote, properties)])
    keys = ", ".join(f"{n} {order}" for n in range(2, len(EVENT_SELECT) + len(properties) + 1))
    return f"SELECT {columns} FROM {name} WHERE {where} ORDER BY pid, {keys}"


def document(columns: dict[str, list[Any]]) -> bytes:
    """A ``JSONColumns`` document: times as ISO 8601 with their offset, dates as ISO text."""
    return orjson.dumps(columns)


def rows(result: bytes) -> list[list[Any]]:
    """The rows of a ``JSONCompact`` result."""
    data: list[list[Any]] = orjson.loads(result)["data"]
    return data


def read_time(text: str) -> datetime:
    """A ``DateTime64(6, 'UTC')`` as ``JSONCompact`` writes it."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


DECODERS: dict[AttributeType, Callable[[Any], Any]] = {
    AttributeType.FLOAT: float,
    AttributeType.TIMESTAMP: read_time,
    AttributeType.DATE: date.fromisoformat,
    AttributeType.NUMBER_LIST: lambda items: [float(item) for item in items],
}
"""How a value in ``JSONCompact`` becomes the stored value the engines share (JSON writes
``0.0`` as ``0``; times and dates come as text); JSON attributes stay text."""


class RowDecoder:
    """Rows as ``JSONCompact`` gives them made into the stored values every engine reads
    (``rows.ProfileReader``, ``rows.EventReader``) and writes merge: ``times`` are the
    positions of built-in time columns, the declared columns start at ``first``."""

    def __init__(
        self, schema: Mapping[str, AttributeType], *, first: int, times: Sequence[int]
    ) -> None:
        self.columns: list[tuple[int, Callable[[Any], Any]]] = [
            (position, read_time) for position in times
        ]
        self.columns += [
            (position, DECODERS[kind])
            for position, kind in enumerate(schema.values(), start=first)
            if kind in DECODERS
        ]

    def __call__(self, row: list[Any]) -> list[Any]:
        for position, decode in self.columns:
            if row[position] is not None:
                row[position] = decode(row[position])
        return row


def profile_rows(schema: Mapping[str, AttributeType]) -> RowDecoder:
    """The decoder of :func:`select_rows`' rows."""
    return RowDecoder(schema, first=len(ROW_COLUMNS), times=[3])


def event_rows(schema: Mapping[str, AttributeType]) -> RowDecoder:
    """The decoder of :func:`select_events`' rows."""
    return RowDecoder(schema, first=len(EVENT_SELECT), times=[1, 2])


def bound(condition: str, params: Sequence[object] | Mapping[str, object]) -> str:
    """The condition with its parameters written in as literals: ``?`` in order from a
    sequence, ``{name:Type}`` by name from a mapping (ClickHouse's own parameter syntax)."""
    if not params:
        return condition
    named = params if isinstance(params, Mapping) else None
    values = iter(params) if named is None else None

    def bind(node: exp.Expr) -> exp.Expr:
        if not isinstance(node, exp.Placeholder):
            return node
        try:
            value = named[node.name] if named is not None else next(values or iter(()))
        except (StopIteration, KeyError):
            raise Unprocessable(
                "the condition names a parameter that was not given", code="engine_query_failed"
            ) from None
        return sqlglot.parse_one(literal(value), read=DIALECT)

    tree = sqlglot.parse_one(condition, read=DIALECT)
    return tree.transform(bind).sql(dialect=DIALECT)


ENCODERS: dict[AttributeType, Callable[[Any], Any]] = {
    AttributeType.TIMESTAMP: lambda moment: moment.isoformat(),
    AttributeType.DATE: lambda day: day.isoformat(),
}
"""How a coerced value goes into a ``JSONColumns`` document (JSON attributes are text)."""


def encode(values: list[Any], kind: AttributeType) -> list[Any]:
    """A column of coerced values for :func:`document`."""
    convert = ENCODERS.get(kind)
    if convert is None:
        return values
    return [None if value is None else convert(value) for value in values]


INTEGER = re.compile(r"(Nullable\()?U?Int\d+\)?")
"""A column type a member query's result is read as pids by."""
TEXT = re.compile(r"(LowCardinality\()?(Nullable\()?(String|FixedString\(\d+\))\)?\)?")
"""A column type a member query's result is read as external ids by; any other is refused."""

TIMEOUT_CODE = 159
"""ClickHouse's ``TIMEOUT_EXCEEDED``: a query stopped by ``max_execution_time``."""


def members_of_query(table: str, query: str, by_pid: bool, settings: str) -> str:
    """The bitmap of the live profiles a (checked, pointed) member query names, by pid or by
    external id; ids of no profile, and NULLs, fall out of the ``IN``.

    >>> members_of_query("p", "SELECT 1", True, "final = 1")[:60]
    'SELECT groupBitmapState(pid) FROM p WHERE pid IN (SELECT q.v'
    """
    column, value = ("pid", "q.v") if by_pid else ("external_id", "toString(q.v)")
    members = f"SELECT {value} FROM ({query}) AS q(v)"
    where = f"{column} IN ({members})"
    return f"SELECT groupBitmapState(pid) FROM {table} WHERE {where} SETTINGS {settings}"


BITMAP_STATE = "AggregateFunction(groupBitmap, UInt32)"


def members_relation(members: AbstractBitMap) -> str:
    """A member set as a relation of pids, for ``LEFT JOIN … AS m_0``: the bitmap in
    ClickHouse's own serialized form (a flag byte, a varint length, the portable Roaring
    bytes pyroaring writes), one hex literal however many members."""
    data = members.serialize()
    state = b"\x01" + _varint(len(data)) + data
    return (
        f"(SELECT arrayJoin(bitmapToArray(CAST(unhex('{state.hex()}') AS {BITMAP_STATE}))) AS pid)"
    )


def read_bitmap(state: bytes) -> BitMap:
    """A ``groupBitmapState`` in ``RowBinary`` as a pyroaring bitmap, without a Python object
    per id: a set of up to 32 is written as a plain array (flag 0, a varint count, the
    UInt32 values), a larger one as portable Roaring bytes (flag 1, a varint length)."""
    if not state:
        return BitMap()
    size, start = _read_varint(state, 1)
    if state[0] == 0:
        return pids_to_bitmap(np.frombuffer(state, dtype="<u4", count=size, offset=start))
    return BitMap.deserialize(state[start : start + size])


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_varint(data: bytes, offset: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        (byte,) = struct.unpack_from("B", data, offset)
        offset += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, offset


def export_events(name: str, properties: Sequence[str], start: int, skip: int, limit: int) -> str:
    """A page of events in copy order (by pid, then every column) from the events of pid
    ``start`` on, skipping the first ``skip`` (those of that pid copied already); see
    ``base.Portable.export_events``. Only the pids the page can reach are sorted: up to the
    pid of the ``skip + limit``-th event from ``start`` on (read on the sorting key)."""
    start, skip, limit = int(start), int(skip), int(limit)
    reach = (
        f"ifNull((SELECT toNullable(pid) FROM {name} WHERE pid >= {start} ORDER BY pid"
        f" LIMIT 1 OFFSET {skip + limit - 1}), {2**32 - 1})"
    )
    where = f"pid >= {start} AND pid <= {reach}"
    return select_events(name, properties, where, "ASC") + f" LIMIT {limit} OFFSET {skip}"


def last_event_cursor(name: str) -> str:
    """The highest pid with events and how many it has: where an event copy into this table
    stands (``engines.portable``)."""
    return (
        f"SELECT pid, count() FROM {name}"
        f" WHERE pid = (SELECT max(pid) FROM {name}) GROUP BY pid HAVING count() > 0"
    )
