"""The SQL the PostgreSQL engine runs: names, column types, DDL and the statement builders.

Every identifier goes through sqlglot quoting; values are bound by psycopg or sent through
``COPY``. The WHERE-SQL of rules is checked by :mod:`audiences.engines.conditions`, and its
parameters, when a caller binds some, are written in as literals psycopg renders
(:func:`bind_parameters`), since ``COPY (query)`` takes no bind parameters.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache

import sqlglot
from sqlglot import exp

from audiences.engines import conditions
from audiences.engines.rows import EVENT_SELECT, ROW_COLUMNS
from audiences.errors import InvalidParameter
from audiences.schemas.attributes import AttributeType

DIALECT = "postgres"

SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
"""What the engine's PostgreSQL schema may be called (``AUDIENCES_PROFILE_ENGINE_SCHEMA``)."""

MAX_PID = 2**32 - 1
"""Pids fit a Roaring bitmap: the sequence stops here (``pids_exhausted``)."""

COLUMN_TYPES: dict[AttributeType, str] = {
    AttributeType.STRING: "text",
    AttributeType.INTEGER: "bigint",
    AttributeType.FLOAT: "double precision",
    AttributeType.BOOLEAN: "boolean",
    AttributeType.TIMESTAMP: "timestamp with time zone",
    AttributeType.DATE: "date",
    AttributeType.STRING_LIST: "text[]",
    AttributeType.NUMBER_LIST: "double precision[]",
    AttributeType.JSON: "jsonb",
}
"""The PostgreSQL column type of each attribute type, spelled as ``format_type`` spells it."""

ATTRIBUTE_TYPES: dict[str, AttributeType] = {sql: kind for kind, sql in COLUMN_TYPES.items()}
"""Attribute type by the column's ``format_type``: the columns are the truth."""


def checked_schema_name(name: str) -> str:
    """Refuse a schema name that could not safely name a schema; return it unchanged."""
    if not SCHEMA_NAME.fullmatch(name):
        raise InvalidParameter(
            "The profile engine schema is 1 to 63 lowercase letters, digits or '_'.",
            code="invalid_engine_schema",
        )
    return name


def quote(name: str) -> str:
    """A PostgreSQL identifier for ``name``, quoted by sqlglot."""
    return exp.to_identifier(name, quoted=True).sql(dialect=DIALECT)


def qualified(schema: str, name: str) -> str:
    """``"schema"."name"``."""
    return f"{quote(schema)}.{quote(name)}"


def registry(schema: str) -> str:
    """The DDL of the table that numbers workspaces: tables are named by number, which keeps
    names short (PostgreSQL cuts identifiers at 63 bytes) and free of case and escapes."""
    return (
        f"CREATE TABLE IF NOT EXISTS {qualified(schema, 'workspaces')} ("
        " workspace_id text PRIMARY KEY,"
        " number integer GENERATED ALWAYS AS IDENTITY UNIQUE)"
    )


def create_storage(profiles: str, events: str, sequence: str, number: int) -> list[str]:
    """The DDL of a workspace's pid sequence, profile table and events table with its indexes:
    by profile and time (a profile's history, behavioural rules) and by time (sweeps,
    retention); event ids unique per workspace, which makes concurrent retries idempotent."""
    return [
        f"CREATE SEQUENCE IF NOT EXISTS {sequence} AS bigint MINVALUE 1 MAXVALUE {MAX_PID}",
        f"CREATE TABLE IF NOT EXISTS {profiles} (pid bigint PRIMARY KEY,"
        " external_id text NOT NULL UNIQUE, extra jsonb,"
        " updated_at timestamp with time zone NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS {events} (pid bigint NOT NULL, event text NOT NULL,"
        ' "timestamp" timestamp with time zone NOT NULL, event_id text,'
        " received_at timestamp with time zone NOT NULL)",
        f'CREATE INDEX IF NOT EXISTS "events_{number}_pid" ON {events} (pid, "timestamp")',
        f'CREATE INDEX IF NOT EXISTS "events_{number}_time" ON {events} ("timestamp")',
        f'CREATE UNIQUE INDEX IF NOT EXISTS "events_{number}_id" ON {events} (event_id)'
        " WHERE event_id IS NOT NULL",
    ]


def add_column(table: str, name: str, kind: AttributeType) -> str:
    """The online DDL that declares one attribute or event property (no rewrite: nullable)."""
    return f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {quote(name)} {COLUMN_TYPES[kind]}"


def select_columns(attributes: Mapping[str, AttributeType]) -> str:
    """:data:`ROW_COLUMNS` then the attributes, JSON as text (what ``rows.ProfileReader`` and
    ``writes.merge_row`` read)."""
    built_in = ["pid", "external_id", "extra::text", "updated_at"]
    return ", ".join([*built_in, *(_read(name, kind) for name, kind in attributes.items())])


def select_event_columns(properties: Mapping[str, AttributeType]) -> str:
    """:data:`EVENT_SELECT` then the properties, JSON as text."""
    return ", ".join([*EVENT_SELECT, *(_read(name, kind) for name, kind in properties.items())])


def _read(name: str, kind: AttributeType) -> str:
    column = quote(name)
    return f"{column}::text" if kind is AttributeType.JSON else column


def write_columns(attributes: Sequence[str]) -> str:
    """The columns a merged row fills, in ``writes.merge_row`` order."""
    return ", ".join([*ROW_COLUMNS, *map(quote, attributes)])


def insert_new(table: str, staged: str, sequence: str, attributes: Sequence[str]) -> str:
    """New profiles from the staged rows (their pid column holds their order), each given the
    next pid in that order; an id another writer inserted meanwhile is left out of the
    ``RETURNING`` (and merged into by the caller)."""
    rest = ", ".join(["external_id", "extra", "updated_at", *map(quote, attributes)])
    return (
        f"INSERT INTO {table} (pid, {rest}) SELECT nextval('{sequence}'), {rest}"
        f" FROM (SELECT * FROM {staged} ORDER BY pid) AS w"
        " ON CONFLICT (external_id) DO NOTHING RETURNING external_id, pid"
    )


def update_from(table: str, staged: str, attributes: Sequence[str]) -> str:
    """Replace the stored rows by the staged merged rows, matched by pid."""
    sets = ", ".join(f"{c} = w.{c}" for c in ["extra", "updated_at", *map(quote, attributes)])
    return f"UPDATE {table} AS t SET {sets} FROM {staged} AS w WHERE t.pid = w.pid"


def insert_empty(table: str, sequence: str) -> str:
    """An empty profile per id of ``%s`` (a text array, new ids in order); their pids."""
    return (
        f"INSERT INTO {table} (pid, external_id, updated_at)"
        f" SELECT nextval('{sequence}'), e, %s FROM unnest(%s::text[]) WITH ORDINALITY AS u(e, n)"
        " ORDER BY n ON CONFLICT (external_id) DO NOTHING RETURNING external_id, pid"
    )


def select_events(
    table: str, properties: Mapping[str, AttributeType], where: str, order: str
) -> str:
    """Events in :data:`EVENT_SELECT` order then the properties, ordered on every column (so
    ties on the time come back in one order), as ``duckdb_sql.select_events`` does."""
    count = len(EVENT_SELECT) + len(properties)
    keys = ", ".join(f"{n} {order}" for n in range(2, count + 1))
    return (
        f"SELECT {select_event_columns(properties)} FROM {table} WHERE {where} ORDER BY pid, {keys}"
    )


def pid_query(
    profiles: str, events: str, condition: str, aliases: Sequence[str], *, reads_events: bool
) -> str:
    """The pids of the profiles for which ``condition`` holds, each member set left-joined by
    pid under its alias; behavioural conditions read the workspace's events as ``events``,
    inlined (``NOT MATERIALIZED``: a CTE read twice would otherwise be computed whole)."""
    joins = "".join(f" LEFT JOIN {quote(a)} ON {quote(a)}.pid = profiles.pid" for a in aliases)
    cte = f"WITH events AS NOT MATERIALIZED (SELECT * FROM {events}) " if reads_events else ""
    return f"{cte}SELECT profiles.pid FROM {profiles} AS profiles{joins} WHERE ({condition})"


def checked_condition(where_sql: str) -> str:
    """The WHERE-SQL unchanged, once checked as PostgreSQL SQL (see :mod:`engines.conditions`)."""
    return conditions.checked_condition(where_sql, DIALECT)


def reads_events(where_sql: str) -> bool:
    """Whether a (checked) condition queries the events relation."""
    return conditions.reads_events(where_sql, DIALECT)


RenderLiteral = Callable[[object], str]
"""Writes one value as an SQL literal (the engine passes psycopg's quoting)."""


def bind_parameters(
    where_sql: str, params: Sequence[object] | Mapping[str, object], render: RenderLiteral
) -> str:
    """The condition with its parameters written in as SQL literals.

    Positional ``?`` take ``params`` in order, ``$1`` … by number; named ``$name`` (or
    psycopg's ``%(name)s``) take ``params[name]``. ``render`` writes one value as a literal
    (psycopg's quoting, so a value can never end its literal early).
    """
    positions = iter(range(10**9))

    def value_of(node: exp.Expr) -> object:
        inner = node.this if isinstance(node, exp.Parameter) else None
        if isinstance(params, Mapping):
            name = inner.name if inner is not None else _name(node)
            if not name or name not in params:
                raise _unbound(f"no value for the parameter {name or '?'!r}")
            return params[name]
        if isinstance(inner, exp.Literal) and inner.name.isdigit():
            index = int(inner.name) - 1
        elif isinstance(node, exp.Placeholder) and not _name(node):
            index = next(positions)
        else:
            raise _unbound("named parameters need a mapping of values")
        if not 0 <= index < len(params):
            raise _unbound("more parameters than values")
        return params[index]

    def replace(node: exp.Expr) -> exp.Expr:
        if isinstance(node, exp.Placeholder | exp.Parameter):
            return exp.Var(this=render(value_of(node)))
        return node

    tree = _parsed(where_sql).copy()
    return tree.transform(replace, copy=False).sql(dialect=DIALECT)


def _name(placeholder: exp.Expr) -> str:
    """The name of ``%(name)s``; empty for ``?``."""
    name = placeholder.this
    return name.name if isinstance(name, exp.Expr) else str(name or "")


@lru_cache(maxsize=1024)
def _parsed(where_sql: str) -> exp.Expr:
    return sqlglot.parse_one(where_sql, read=DIALECT)


def _unbound(detail: str) -> InvalidParameter:
    return InvalidParameter(
        f"The condition's parameters do not match: {detail}.", code="invalid_parameter"
    )


INTEGER_OIDS = frozenset({20, 21, 23})
"""Type oids (``bigint``, ``smallint``, ``integer``) of a member query's column read as pids."""
TEXT_OIDS = frozenset({25, 1043, 1042, 19, 705})
"""Type oids (``text``, ``varchar``, ``char``, ``name``, an untyped literal's ``unknown``) of
a member query's column read as external ids; any other is refused."""


def members_of_query(table: str, query: str, by_pid: bool) -> str:
    """The distinct pids of the profiles a (checked, pointed) member query names, by pid or by
    external id; ids of no profile fall out of the join.

    >>> members_of_query("p", "SELECT 1", True)
    'SELECT DISTINCT profiles.pid FROM p AS profiles JOIN (SELECT 1) AS q(v) ON profiles.pid = q.v'
    """
    on = "profiles.pid = q.v" if by_pid else "profiles.external_id = CAST(q.v AS text)"
    return f"SELECT DISTINCT profiles.pid FROM {table} AS profiles JOIN ({query}) AS q(v) ON {on}"


def export_events(table: str, properties: Mapping[str, AttributeType]) -> str:
    """A page of events in copy order (by pid, then every column) from the events of pid
    ``%(start)s`` on, skipping the first ``%(skip)s`` (those of that pid copied already); see
    ``base.Portable.export_events``. Only the pids the page can reach are sorted: up to the
    pid of the ``skip + limit``-th event from ``start`` on, found on the (pid, time) index."""
    reach = (
        f"coalesce((SELECT pid FROM {table} WHERE pid >= %(start)s ORDER BY pid"
        f" OFFSET %(skip)s + %(limit)s - 1 LIMIT 1), {MAX_PID})"
    )
    where = f"pid >= %(start)s AND pid <= {reach}"
    return select_events(table, properties, where, "ASC") + " LIMIT %(limit)s OFFSET %(skip)s"


def last_event_cursor(table: str) -> str:
    """The highest pid with events and how many it has: where an event copy into this table
    stands (``engines.portable``)."""
    return (
        f"SELECT pid, count(*) FROM {table} WHERE pid = (SELECT max(pid) FROM {table}) GROUP BY pid"
    )


def last_pid(sequence: str) -> str:
    """The last pid a sequence gave out (0 before its first)."""
    return f"SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {sequence}"


def insert_moved(table: str, staged: str) -> str:
    """Copy staged whole rows (pids given) in; a pid or external id stored already is left
    alone, so a batch imported twice writes once."""
    return f"INSERT INTO {table} SELECT * FROM {staged} ON CONFLICT DO NOTHING"
