"""Attribute schemas as engines apply them: names checked, types fixed, extras moved to columns.

Engine-neutral, so PostgreSQL or ClickHouse adapters refuse and migrate exactly as DuckDB does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import orjson
from pydantic import ValidationError

from audiences.engines.base import RESERVED_COLUMNS, HeldColumns, check_workspace_id
from audiences.engines.coerce import TypeMismatchError, coerce, dump_json
from audiences.engines.writes import canonical
from audiences.errors import Conflict, ErrorDetail, ValidationFailed
from audiences.schemas.attributes import Attribute, AttributeSchema, AttributeType
from audiences.schemas.events import RESERVED_EVENT_FIELDS

SCHEMA_TTL = 2.0
"""Seconds a process trusts the columns it read before reading them again: another process
may declare an attribute. Writes always read them under the workspace's write lock."""


def checked_schema(
    schema: AttributeSchema, *, reserved: frozenset[str] = RESERVED_COLUMNS
) -> dict[str, AttributeType]:
    """Names and types as ``Attribute`` allows them, ``reserved`` names (the built-in columns
    of profiles, or of events) refused."""
    problems: list[ErrorDetail] = []
    for name, kind in schema.items():
        try:
            Attribute(name=name, type=kind)
        except ValidationError as error:
            message = f"{name!r} is not a valid attribute: {error.errors()[0]['msg']}"
            problems.append(ErrorDetail("attribute_invalid", message, ("schema", name)))
        if name in reserved:
            message = f"{name!r} is reserved: {', '.join(sorted(reserved))} are built in"
            problems.append(ErrorDetail("attribute_reserved", message, ("schema", name)))
    if problems:
        raise ValidationFailed("The attribute schema is not valid.", errors=problems)
    return {name: AttributeType(kind) for name, kind in schema.items()}


def refuse_type_changes(
    current: Mapping[str, AttributeType], wanted: Mapping[str, AttributeType]
) -> None:
    """Raise ``Conflict`` listing every declared attribute whose type would change."""
    problems = [
        ErrorDetail(
            "attribute_type_conflict",
            f"{name!r} is declared {current[name]}; it cannot become {kind}",
            ("schema", name),
        )
        for name, kind in wanted.items()
        if name in current and current[name] != kind
    ]
    if problems:
        raise Conflict(
            "An attribute cannot change type.", code="attribute_type_conflict", errors=problems
        )


def extra_moves(
    rows: list[tuple[int, str]], name: str, kind: AttributeType
) -> list[tuple[int, Any, str | None]]:
    """For rows (pid, extra JSON) holding ``name``: the pid, the typed value, the extra left over.

    The extra is read in canonical form (nested objects as dotted names, see
    :func:`audiences.engines.writes.canonical`), so a value stored nested moves too. Values
    that do not fit the newly declared type stay in ``extra``, where nothing is lost.
    """
    moves: list[tuple[int, Any, str | None]] = []
    for pid, extra in rows:
        data, _ = canonical(orjson.loads(extra), {})
        if name not in data:
            continue
        try:
            value = coerce(kind, data.pop(name))
        except TypeMismatchError:
            continue
        moves.append((pid, value, dump_json(data) if data else None))
    return moves


CatalogTables = dict[str, tuple[str, bool]]
"""Table name -> (workspace id, whether it is the workspace's events table)."""


def catalog_tables(
    workspace_ids: Iterable[str], profiles: Callable[[str], str], events: Callable[[str], str]
) -> CatalogTables:
    """The profile and events tables of each workspace (ids checked), as a catalog names them."""
    tables: CatalogTables = {}
    for workspace_id in workspace_ids:
        check_workspace_id(workspace_id)
        for table, is_events in ((profiles(workspace_id), False), (events(workspace_id), True)):
            if tables.get(table, (workspace_id, is_events)) != (workspace_id, is_events):
                raise ValueError(f"workspaces {tables[table][0]} and {workspace_id} share {table}")
            tables[table] = (workspace_id, is_events)
    return tables


def held_columns(
    tables: CatalogTables,
    rows: Iterable[Sequence[Any]],
    types: Mapping[Any, AttributeType],
    reserved: frozenset[str] = RESERVED_COLUMNS,
) -> dict[str, HeldColumns]:
    """Each workspace's typed columns from catalog rows (table, column, type key) in column
    order; built-in columns, and types no attribute has, are left out (a workspace whose table
    is not the engine's then fails where it is loaded, as before)."""
    held = {workspace_id: HeldColumns({}, {}) for workspace_id, _ in tables.values()}
    for table, column, key in rows:
        workspace_id, is_events = tables[table]
        kind = types.get(key)
        if kind is None or column in (RESERVED_EVENT_FIELDS if is_events else reserved):
            continue
        found = held[workspace_id]
        (found.event_properties if is_events else found.attributes)[column] = kind
    return held
