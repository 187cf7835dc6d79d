"""The SQL the DuckDB engine runs: table names, column types and statement builders.

Every identifier goes through sqlglot quoting and every value is a bound parameter; the only
text that is not ours is the WHERE-SQL from the rule compiler, checked by ``checked_condition``
(once per distinct text).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from sqlglot import exp

from audiences.engines import conditions
from audiences.engines.rows import EVENT_SELECT, ROW_COLUMNS
from audiences.schemas.attributes import AttributeType

DIALECT = "duckdb"

COLUMN_TYPES: dict[AttributeType, str] = {
    AttributeType.STRING: "VARCHAR",
    AttributeType.INTEGER: "BIGINT",
    AttributeType.FLOAT: "DOUBLE",
    AttributeType.BOOLEAN: "BOOLEAN",
    AttributeType.TIMESTAMP: "TIMESTAMPTZ",
    AttributeType.DATE: "DATE",
    AttributeType.STRING_LIST: "VARCHAR[]",
    AttributeType.NUMBER_LIST: "DOUBLE[]",
    AttributeType.JSON: "JSON",
}
"""The DuckDB column type of each attribute type."""

ATTRIBUTE_TYPES: dict[str, AttributeType] = {
    **{sql: kind for kind, sql in COLUMN_TYPES.items()},
    "TIMESTAMP WITH TIME ZONE": AttributeType.TIMESTAMP,
}
"""Attribute type by a column's type in DuckDB's catalog: the columns are the truth."""


def quote(name: str) -> str:
    """A DuckDB identifier for ``name``, quoted by sqlglot."""
    return exp.to_identifier(name, quoted=True).sql(dialect=DIALECT)


def table_name(workspace_id: str) -> str:
    """The profile table of a workspace, unquoted.

    DuckDB matches identifiers case-insensitively even when quoted, so ``Acme`` and ``acme``
    would share a table; ``_``, ``-`` and upper-case letters are escaped with ``_`` to keep
    names apart: ``_`` as ``__``, ``-`` as ``_h`` and ``X`` as ``_ux``, so each escape reads back
    one way (workspace ids are lower-case UUIDs, so their names keep the ``_h`` they had).
    """
    escaped = "".join(_ESCAPES.get(char, char) for char in workspace_id)
    return f"profiles_{escaped}"


_ESCAPES = {"_": "__", "-": "_h", **{c: f"_u{c.lower()}" for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}}


def checked_condition(where_sql: str) -> str:
    """The WHERE-SQL unchanged, once checked as DuckDB SQL (see :mod:`engines.conditions`)."""
    return conditions.checked_condition(where_sql, DIALECT)


def reads_events(where_sql: str) -> bool:
    """Whether a (checked) condition queries the events relation."""
    return conditions.reads_events(where_sql, DIALECT)


def create_table(table: str) -> str:
    """The DDL of a new, attribute-less profile table."""
    return (
        f"CREATE TABLE IF NOT EXISTS {table} (pid UINTEGER NOT NULL, external_id VARCHAR NOT NULL,"
        " extra JSON, updated_at TIMESTAMPTZ NOT NULL)"
    )


def add_column(table: str, name: str, kind: AttributeType) -> str:
    """The online DDL that declares one attribute."""
    return f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {quote(name)} {COLUMN_TYPES[kind]}"


def move_from_extra(table: str, name: str, kind: AttributeType) -> str:
    """Set a new column and the trimmed ``extra`` of the rows whose extra held its value."""
    return (
        f"UPDATE {table} SET {quote(name)} = s.v, extra = s.e FROM (SELECT"
        f" unnest(?::UINTEGER[]) AS pid, unnest(?::{COLUMN_TYPES[kind]}[]) AS v,"
        f" unnest(?::JSON[]) AS e) s WHERE s.pid = {table}.pid"
    )


ROW_KINDS = (
    AttributeType.INTEGER,
    AttributeType.STRING,
    AttributeType.JSON,
    AttributeType.TIMESTAMP,
)
"""The value kinds of :data:`ROW_COLUMNS` in a row (``extra`` is JSON text); the pid is
stored as ``UINTEGER``."""


def select_rows(table: str, attributes: Sequence[str], where: str) -> str:
    """A profile's row: :data:`ROW_COLUMNS`, then the declared attributes."""
    columns = ", ".join([*ROW_COLUMNS, *map(quote, attributes)])
    return f"SELECT {columns} FROM {table} WHERE {where}"


def insert_rows(table: str, schema: dict[str, AttributeType]) -> str:
    """Append whole rows in :func:`select_rows`' column order from ``$rows``, one JSON document
    holding a list per column (:func:`rows_document`).

    DuckDB parses the document in one C++ pass; binding a Python list per column instead
    converts every value on its own and took 2-3 times as long for 10,000 rows.
    """
    return _insert_columns(table, ROW_COLUMNS, [*ROW_KINDS, *schema.values()], schema)


def _insert_columns(
    table: str,
    built_in: Sequence[str],
    kinds: Sequence[AttributeType],
    declared: dict[str, AttributeType],
) -> str:
    types = ["UINTEGER", *(COLUMN_TYPES[kind] for kind in kinds[1:])]
    structure = orjson.dumps({f"c{n}": f"{kind}[]" for n, kind in enumerate(types)}).decode()
    targets = ", ".join([*map(quote, built_in), *map(quote, declared)])
    values = ", ".join(f"unnest(d.c{n})" for n in range(len(types)))
    return (
        f"INSERT INTO {table} ({targets}) SELECT {values}"
        f" FROM (SELECT from_json($rows, '{structure}') AS d)"
    )


def rows_document(rows: Sequence[Sequence[Any]], schema: dict[str, AttributeType]) -> str:
    """``rows`` (in :func:`select_rows`' order) as the ``$rows`` of :func:`insert_rows`.

    Values are in the form the engine binds (:mod:`audiences.engines.coerce`); JSON columns
    hold JSON text, embedded as it is.
    """
    return columns_document(rows, [*ROW_KINDS, *schema.values()])


def events_table_name(workspace_id: str) -> str:
    """The events table of a workspace, unquoted: beside :func:`table_name`'s, same escaping."""
    return "events_" + table_name(workspace_id).removeprefix("profiles_")


EVENT_COLUMNS = ("pid", "event", "timestamp", "event_id", "received_at")
"""The columns every events table starts with, before one typed column per property."""

EVENT_KINDS = (
    AttributeType.INTEGER,
    AttributeType.STRING,
    AttributeType.TIMESTAMP,
    AttributeType.STRING,
    AttributeType.TIMESTAMP,
)
"""The value kinds of :data:`EVENT_COLUMNS` in a row; the pid is stored as ``UINTEGER``."""


def create_events_table(table: str) -> str:
    """The DDL of a new, property-less events table (its columns are the contract of #13)."""
    return (
        f"CREATE TABLE IF NOT EXISTS {table} (pid UINTEGER NOT NULL, event VARCHAR NOT NULL,"
        ' "timestamp" TIMESTAMPTZ NOT NULL, event_id VARCHAR, received_at TIMESTAMPTZ NOT NULL)'
    )


def insert_events(table: str, properties: dict[str, AttributeType]) -> str:
    """Append events (:data:`EVENT_COLUMNS`, then ``properties``) from ``$rows``, one JSON
    document of a list per column (:func:`columns_document`), parsed by DuckDB in one pass."""
    return _insert_columns(table, EVENT_COLUMNS, [*EVENT_KINDS, *properties.values()], properties)


def append_events(table: str, source: str, properties: dict[str, AttributeType]) -> str:
    """Append events from the relation ``source`` (see :func:`appended_event_columns`);
    ``$received`` is every event's ``received_at``."""
    targets = ", ".join([*map(quote, EVENT_COLUMNS), *map(quote, properties)])
    appended = appended_event_columns(source, properties, with_ids=True)
    return f"INSERT INTO {table} ({targets}) {appended}"


def appended_event_columns(
    source: str, properties: Mapping[str, AttributeType], *, with_ids: bool
) -> str:
    """The events of the relation ``source`` as the events table's columns: ``pid``,
    ``event``, ``micros`` (the time in microseconds since 1970, UTC) as ``timestamp``, with
    ``with_ids`` its ``event_id`` and ``$received`` as ``received_at``, then the properties
    as ``p0``, ``p1`` …, each cast to its column's type and named as it."""
    values = ["pid", "event", "timezone('UTC', make_timestamp(micros)) AS \"timestamp\""]
    if with_ids:
        values += ["event_id", "$received AS received_at"]
    values += [
        f"CAST(p{n} AS {COLUMN_TYPES[kind]}) AS {quote(name)}"
        for n, (name, kind) in enumerate(properties.items())
    ]
    return f"SELECT {', '.join(values)} FROM {source}"


def columns_document(rows: Sequence[Sequence[Any]], kinds: Sequence[AttributeType]) -> str:
    """``rows`` as one JSON document of a list per column (``c0``, ``c1`` …), JSON columns
    embedded as the JSON text they hold."""
    return columns_json([[row[n] for row in rows] for n in range(len(kinds))], kinds)


def columns_json(columns: Sequence[list[Any]], kinds: Sequence[AttributeType]) -> str:
    """Columns (a list of values each, in the kinds' order) as :func:`columns_document`'s
    document, for callers that hold columns already (no rows built, no transposing)."""
    document: dict[str, list[Any]] = {}
    for n, (column, kind) in enumerate(zip(columns, kinds, strict=True)):
        if kind is AttributeType.JSON:
            column = [None if value is None else orjson.Fragment(value) for value in column]
        document[f"c{n}"] = column
    return orjson.dumps(document).decode()


def select_events(table: str, properties: Sequence[str], where: str, order: str) -> str:
    """Events in :data:`EVENT_SELECT` order then the properties; ``order`` is ``ASC`` or
    ``DESC`` over every selected column, so ties on the time are broken the same way each
    time (only wholly identical events are interchangeable)."""
    columns = ", ".join([*EVENT_SELECT, *map(quote, properties)])
    keys = ", ".join(f"{n} {order}" for n in range(2, len(EVENT_SELECT) + len(properties) + 1))
    return f"SELECT {columns} FROM {table} WHERE {where} ORDER BY pid, {keys}"


def select_rule_events(table: str, properties: Sequence[str], where: str) -> str:
    """Events as rules read them (``rows.RULE_SELECT`` then the properties): the time as epoch
    microseconds, no ids, ordered by the columns read (pid, time, name, properties), so only
    wholly identical rows tie and the answer is the same each time.

    Not by ``received_at`` and ``event_id`` as :func:`select_events` is: a column in the
    ORDER BY is read for every row the scan passes, before the pid test drops it, and at 10M
    events the ``event_id`` strings made this read 225 ms of CPU for ~500 profiles instead of
    58 (rules never look at either, and Python's evaluation does not depend on the order of
    events of one time).
    """
    columns = ", ".join(['pid, epoch_us("timestamp"), event', *map(quote, properties)])
    keys = ", ".join(['"timestamp"', "event", *map(quote, properties)])
    return f"SELECT {columns} FROM {table} WHERE {where} ORDER BY pid, {keys}"


def pids_between(table: str, ranges: int) -> str:
    """The distinct pids of the events timed in any of ``ranges`` pairs of bound parameters
    (``low``, ``high``, both included). DuckDB skips the row groups whose min/max time
    statistics lie outside every range, so on events appended in time order this reads only
    the few row groups of the period asked about.

    >>> pids_between("events_x", 1)
    'SELECT DISTINCT pid FROM events_x WHERE ("timestamp" BETWEEN ? AND ?)'
    """
    tests = " OR ".join(['("timestamp" BETWEEN ? AND ?)'] * ranges)
    return f"SELECT DISTINCT pid FROM {table} WHERE {tests}"


INTEGER_TYPES = frozenset(
    {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT"}
    | {"UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT"}
)
"""Column types a member query's result is read as pids in."""
TEXT_TYPES = frozenset({"VARCHAR"})
"""Column types a member query's result is read as external ids in; any other is refused."""


def members_of_query(table: str, query: str, by_pid: bool) -> str:
    """The distinct pids of the profiles a (checked, pointed) member query names, by pid or by
    external id; ids of no profile fall out of the join.

    >>> members_of_query("p", "SELECT 1", True)
    'SELECT DISTINCT profiles.pid FROM p AS profiles JOIN (SELECT 1) AS q(v) ON profiles.pid = q.v'
    """
    on = "profiles.pid = q.v" if by_pid else "profiles.external_id = CAST(q.v AS VARCHAR)"
    return f"SELECT DISTINCT profiles.pid FROM {table} AS profiles JOIN ({query}) AS q(v) ON {on}"


def export_events(table: str, properties: Sequence[str]) -> str:
    """A page of events in copy order (by pid, then every column) from the events of pid
    ``$start`` on, skipping the first ``$skip`` (those of that pid copied already); see
    ``base.Portable.export_events``. Only the pids the page can reach are sorted: up to the
    pid of the ``$skip + $limit``-th event from ``$start`` on."""
    reach = (
        f"coalesce((SELECT pid FROM {table} WHERE pid >= $start ORDER BY pid"
        f" LIMIT 1 OFFSET $skip + $limit - 1), {MAX_PID})"
    )
    where = f"pid >= $start AND pid <= {reach}"
    return select_events(table, properties, where, "ASC") + " LIMIT $limit OFFSET $skip"


MAX_PID = 2**32 - 1
"""The largest pid (a ``UINTEGER``)."""


def last_event_cursor(table: str) -> str:
    """The highest pid with events and how many it has: where an event copy into this table
    stands (``engines.portable``)."""
    return (
        f"SELECT pid, count(*) FROM {table} WHERE pid = (SELECT max(pid) FROM {table}) GROUP BY pid"
    )


def restart_sequence(sequence: str, start: int) -> str:
    """Make ``sequence`` give ``start`` next (DuckDB cannot alter a sequence: it is replaced;
    no column default refers to it)."""
    return f"CREATE OR REPLACE SEQUENCE {sequence} START {int(start)}"
