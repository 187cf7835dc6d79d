"""The attribute schema of a workspace: declared through the API, or inferred as values arrive.

By default a workspace infers: the first write that gives an undeclared attribute a value with
a clear type declares it, at every ingest path (profile writes, batches, file imports), so a
rule can name it at once. A strict workspace infers nothing and refuses undeclared attributes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from audiences.engines.base import RESERVED_COLUMNS
from audiences.engines.writes import canonical
from audiences.errors import Conflict, NotFound, ValidationFailed
from audiences.schemas.attributes import (
    ATTRIBUTE_NAME,
    MAX_ATTRIBUTES,
    AttributeDeclare,
    AttributeOut,
    AttributeType,
)
from audiences.services.callers import Caller
from audiences.services.runtime import Runtime
from audiences.store.tables.attributes import AttributeRow
from audiences.store.tables.workspaces import WorkspaceRow


def schema(session: Session, *, workspace_id: str) -> dict[str, AttributeType]:
    """Every attribute of the workspace and its type: what rules are validated against."""
    # Two columns, not whole rows: every refresh and streaming write reads this.
    rows = session.execute(
        select(AttributeRow.name, AttributeRow.type).where(
            AttributeRow.workspace_id == workspace_id
        )
    )
    return {name: AttributeType(kind) for name, kind in rows}


def list_(session: Session, *, caller: Caller) -> list[AttributeRow]:
    """The workspace's attributes by name."""
    stmt = select(AttributeRow).where(AttributeRow.workspace_id == caller.workspace_id)
    return list(session.scalars(stmt.order_by(AttributeRow.name)))


def get(session: Session, *, caller: Caller, name: str) -> AttributeRow:
    """One attribute; :class:`NotFound` if the workspace has none by that name."""
    row = session.get(AttributeRow, (caller.workspace_id, name))
    if row is None:
        raise NotFound(f"no attribute {name!r}", code="attribute_not_found")
    return row


def declare(
    session: Session, *, caller: Caller, runtime: Runtime, name: str, data: AttributeDeclare
) -> tuple[AttributeRow, bool]:
    """Declare an attribute (idempotent); its type can never change. Returns (row, created)."""
    lock_schema(session, caller.workspace_id)
    row = session.get(AttributeRow, (caller.workspace_id, name))
    if row is not None:
        if row.type != data.type.value:
            raise Conflict(
                f"attribute {name!r} is a {row.type}; a type cannot change",
                code="attribute_type_conflict",
            )
        row.description = data.description
        row.inferred = False
        session.flush()
        return row, False
    _add(session, caller.workspace_id, {name: data.type}, runtime, inferred=False)
    row = session.get_one(AttributeRow, (caller.workspace_id, name))
    row.description = data.description
    session.flush()
    return row, True


def admit(
    session: Session,
    *,
    workspace_id: str,
    runtime: Runtime,
    records: Iterable[Mapping[str, Any]],
    typed: bool = True,
) -> bool:
    """Make the schema ready for records about to be written; True when the workspace is strict.

    In a workspace that infers, each attribute the records name that is not declared yet is
    declared with the type of its first value that has one (null and empty lists decide
    nothing, so the name waits in ``extra`` for a value that does); records are read in their
    canonical form, so ``{"addr": {"city": …}}`` declares ``addr.city``. With ``typed`` False
    the values are text (CSV cells): a name's type is the narrowest that reads every one of
    its values here. Names no rule could write (see ``ATTRIBUTE_NAME``), names inside a
    ``json`` attribute, and names past the workspace's limit are left in ``extra``.

    A strict workspace declares nothing: the engine refuses the records naming undeclared
    attributes (``upsert_profiles(..., strict=True)``).
    """
    if is_strict(session, workspace_id=workspace_id):
        return True
    current = schema(session, workspace_id=workspace_id)
    found = inferred_types(records, current, typed=typed)
    if not found:
        return False
    lock_schema(session, workspace_id)
    current = schema(session, workspace_id=workspace_id)  # another writer may have added some
    room = MAX_ATTRIBUTES - len(current)
    new = [name for name in found if name not in current][: max(room, 0)]
    # A column left by a transaction that rolled back keeps its type: declare that one.
    columns = runtime.profiles.attributes(workspace_id)
    if new:
        _add(
            session,
            workspace_id,
            {name: columns.get(name, found[name]) for name in new},
            runtime,
            inferred=True,
        )
    return False


def is_strict(session: Session, *, workspace_id: str) -> bool:
    """Whether the workspace refuses undeclared attributes instead of inferring them."""
    strict = session.scalar(
        select(WorkspaceRow.strict_attributes).where(WorkspaceRow.id == workspace_id)
    )
    return bool(strict)


def infer_text_type(text: str) -> AttributeType:
    """The attribute type a CSV cell suggests: boolean, integer (no leading zero, so codes
    like ``01234`` stay text), float, date, timestamp, else string."""
    value = text.strip()
    if value.lower() in ("true", "false"):
        return AttributeType.BOOLEAN
    if _INTEGER.fullmatch(value) and -(2**63) <= int(value) < 2**63:
        return AttributeType.INTEGER
    if _FLOAT.fullmatch(value):
        return AttributeType.FLOAT
    return _temporal(value) or AttributeType.STRING


_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)")
_FLOAT = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]{1,3})?")
_WIDER = {
    frozenset({AttributeType.INTEGER, AttributeType.FLOAT}): AttributeType.FLOAT,
    frozenset({AttributeType.DATE, AttributeType.TIMESTAMP}): AttributeType.TIMESTAMP,
}
"""Two text types one column may mix, and the type that reads both."""


def inferred_types(
    records: Iterable[Mapping[str, Any]],
    current: Mapping[str, AttributeType],
    *,
    typed: bool,
    reserved: frozenset[str] = RESERVED_COLUMNS,
) -> dict[str, AttributeType]:
    """Each undeclared name the records give a telling value, with its type, in first-seen order.

    ``typed`` False: values are text (CSV cells), and a name's type is the narrowest that reads
    all of them. Names no rule could write, names under a ``json`` one and ``reserved`` names
    are skipped. Event properties are inferred by the same rules (``services.event_properties``).
    """
    inferred: dict[str, AttributeType] = {}
    texts: dict[str, set[AttributeType]] = {}
    declared = current.keys()
    for attributes in records:
        # A record naming only declared attributes declares nothing (an object under a
        # declared name stays whole): one set comparison in C instead of a look-up per name,
        # which cost a tenth of a 10,000-record upsert (and `isinstance(…, Mapping)` is slow).
        if isinstance(attributes, dict) and attributes.keys() <= declared:
            continue
        if not isinstance(attributes, Mapping):
            continue
        flat, _ = canonical(attributes, current)
        for name, value in flat.items():
            if name in current or name in inferred or not _inferable(name, current, reserved):
                continue
            if typed:
                kind = infer_type(value)
                if kind is not None:
                    inferred[name] = kind
            elif isinstance(value, str) and value.strip():
                texts.setdefault(name, set()).add(infer_text_type(value))
    for name, kinds in texts.items():
        only = next(iter(kinds)) if len(kinds) == 1 else _WIDER.get(frozenset(kinds))
        inferred[name] = only or AttributeType.STRING
    return inferred


def _inferable(name: str, current: Mapping[str, AttributeType], reserved: frozenset[str]) -> bool:
    if re.fullmatch(ATTRIBUTE_NAME, name) is None or name in reserved:
        return False
    parts = name.split(".")
    # Under a json attribute, rules reach the value through it: no column of its own.
    return all(
        current.get(".".join(parts[:cut])) is not AttributeType.JSON for cut in range(1, len(parts))
    )


def infer_type(value: Any) -> AttributeType | None:
    """The attribute type a JSON value suggests, None when it suggests nothing (null, []).

    An object suggests ``json`` only where it is not flattened: under a name given as a whole
    (records are flattened first, see :func:`audiences.engines.writes.canonical`)."""
    if isinstance(value, bool):
        return AttributeType.BOOLEAN
    if isinstance(value, int):
        return AttributeType.INTEGER
    if isinstance(value, float):
        return AttributeType.FLOAT
    if isinstance(value, str):
        return _temporal(value) or AttributeType.STRING
    if isinstance(value, dict):
        return AttributeType.JSON
    if isinstance(value, list) and value:
        if all(isinstance(item, str) for item in value):
            return AttributeType.STRING_LIST
        if all(isinstance(item, int | float) and not isinstance(item, bool) for item in value):
            return AttributeType.NUMBER_LIST
        return AttributeType.JSON
    return None


def to_model(row: AttributeRow) -> AttributeOut:
    """The public shape of an attribute."""
    return AttributeOut(
        name=row.name,
        type=AttributeType(row.type),
        description=row.description,
        inferred=row.inferred,
        created_at=row.created_at,
    )


def _temporal(text: str) -> AttributeType | None:
    if len(text) == 10:
        try:
            date.fromisoformat(text)
            return AttributeType.DATE
        except ValueError:
            return None
    if 19 <= len(text) <= 35 and text[10:11] in ("T", " "):
        try:
            datetime.fromisoformat(text)
            return AttributeType.TIMESTAMP
        except ValueError:
            return None
    return None


def lock_schema(session: Session, workspace_id: str) -> None:
    """Serialise schema changes of one workspace on its row (PostgreSQL; SQLite writers are
    serial already), so two writers inferring or declaring one name (of an attribute, an
    event property or an event name) cannot both insert."""
    session.execute(
        select(WorkspaceRow.id).where(WorkspaceRow.id == workspace_id).with_for_update()
    )


def _add(
    session: Session,
    workspace_id: str,
    new: Mapping[str, AttributeType],
    runtime: Runtime,
    *,
    inferred: bool,
) -> None:
    count = session.scalar(
        select(func.count())
        .select_from(AttributeRow)
        .where(AttributeRow.workspace_id == workspace_id)
    )
    if (count or 0) + len(new) > MAX_ATTRIBUTES:
        raise ValidationFailed(
            f"a workspace has at most {MAX_ATTRIBUTES} attributes", code="too_many_attributes"
        )
    current = schema(session, workspace_id=workspace_id)
    runtime.profiles.ensure_attributes(workspace_id, {**current, **new})
    for name, kind in new.items():
        session.add(
            AttributeRow(workspace_id=workspace_id, name=name, type=kind.value, inferred=inferred)
        )
    session.flush()
