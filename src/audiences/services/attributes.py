"""The attribute schema of a workspace: declared through the API or inferred on first ingest."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from audiences.engines.base import RESERVED_COLUMNS
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
    _lock_schema(session, caller.workspace_id)
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


def infer(
    session: Session, *, workspace_id: str, runtime: Runtime, records: Iterable[Mapping[str, Any]]
) -> None:
    """On a workspace's first ingest, declare each attribute with the type of its first value.

    Later, undeclared attributes are kept in the profile's ``extra`` JSON until declared.
    """
    if schema(session, workspace_id=workspace_id):
        return
    _lock_schema(session, workspace_id)
    if schema(session, workspace_id=workspace_id):
        return  # another first ingest inferred it while this one waited
    inferred: dict[str, AttributeType] = {}
    for attributes in records:
        for name, value in attributes.items():
            kind = infer_type(value)
            if name not in inferred and kind is not None and _valid_name(name):
                inferred[name] = kind
    if inferred:
        _add(session, workspace_id, inferred, runtime, inferred=True)


def infer_type(value: Any) -> AttributeType | None:
    """The attribute type a JSON value suggests, None when it suggests nothing (null, [])."""
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


def _lock_schema(session: Session, workspace_id: str) -> None:
    """Serialise schema changes of one workspace on its row (PostgreSQL; SQLite writers are
    serial already), so two first ingests or two declarations of one name cannot both insert."""
    session.execute(
        select(WorkspaceRow.id).where(WorkspaceRow.id == workspace_id).with_for_update()
    )


def _valid_name(name: str) -> bool:
    return re.fullmatch(ATTRIBUTE_NAME, name) is not None and name not in RESERVED_COLUMNS


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
