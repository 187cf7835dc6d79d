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

from sqlalchemy import select
from sqlalchemy.orm import Session

from audiences.engines.base import RESERVED_COLUMNS
from audiences.engines.writes import canonical
from audiences.errors import NotFound
from audiences.schemas.attributes import (
    ATTRIBUTE_NAME,
    AttributeDeclare,
    AttributeOut,
    AttributeType,
)
from audiences.services import declarations
from audiences.services.callers import Caller
from audiences.services.declarations import ATTRIBUTES
from audiences.services.runtime import Runtime
from audiences.store.tables.attributes import AttributeRow
from audiences.store.tables.workspaces import WorkspaceRow


def schema(session: Session, *, workspace_id: str) -> dict[str, AttributeType]:
    """Every attribute of the workspace and its type: what rules are validated against."""
    return declarations.schema(session, kind=ATTRIBUTES, workspace_id=workspace_id)


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
    return declarations.declare(
        session,
        kind=ATTRIBUTES,
        workspace_id=caller.workspace_id,
        profiles=runtime.profiles,
        name=name,
        type_=data.type,
        description=data.description,
    )


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
    if found:
        declarations.declare_inferred(
            session,
            kind=ATTRIBUTES,
            workspace_id=workspace_id,
            profiles=runtime.profiles,
            found=found,
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
