"""The event property schema of a workspace: declared through the API, or inferred as events arrive.

A property has one type per workspace across every event name (``amount`` is a float in
``order`` and in ``refund``), so rules read one type and the engine keeps one typed column.
Inference follows the attribute rules exactly (:func:`services.attributes.inferred_types`): the
first telling value declares the name; a strict workspace (``strict_attributes``) infers nothing
and refuses events with undeclared properties.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from audiences.errors import Conflict, NotFound, ValidationFailed
from audiences.schemas.attributes import MAX_ATTRIBUTES, AttributeType
from audiences.schemas.events import (
    RESERVED_EVENT_FIELDS,
    EventPropertyDeclare,
    EventPropertyOut,
    EventSchema,
)
from audiences.services import attributes
from audiences.services.callers import Caller
from audiences.services.runtime import Runtime
from audiences.store.tables import EventNameRow, EventPropertyRow

MAX_EVENT_PROPERTIES = MAX_ATTRIBUTES
"""Most properties one workspace may declare (each is a column of its events table)."""


def schema(session: Session, *, workspace_id: str) -> dict[str, AttributeType]:
    """Every event property of the workspace and its type."""
    rows = session.execute(
        select(EventPropertyRow.name, EventPropertyRow.type).where(
            EventPropertyRow.workspace_id == workspace_id
        )
    )
    return {name: AttributeType(kind) for name, kind in rows}


def event_schema(session: Session, *, workspace_id: str) -> EventSchema:
    """The workspace's event property types and the event names it has received: what rules
    over events are validated against."""
    return EventSchema(
        properties=schema(session, workspace_id=workspace_id),
        names=event_names(session, workspace_id=workspace_id),
    )


def event_names(session: Session, *, workspace_id: str) -> frozenset[str]:
    """The event names the workspace has received (unknown names in rules are warnings)."""
    stmt = select(EventNameRow.name).where(EventNameRow.workspace_id == workspace_id)
    return frozenset(session.scalars(stmt))


def list_(session: Session, *, caller: Caller) -> list[EventPropertyRow]:
    """The workspace's event properties by name."""
    stmt = select(EventPropertyRow).where(EventPropertyRow.workspace_id == caller.workspace_id)
    return list(session.scalars(stmt.order_by(EventPropertyRow.name)))


def get(session: Session, *, caller: Caller, name: str) -> EventPropertyRow:
    """One event property; :class:`NotFound` if the workspace has none by that name."""
    row = session.get(EventPropertyRow, (caller.workspace_id, name))
    if row is None:
        raise NotFound(f"no event property {name!r}", code="event_property_not_found")
    return row


def declare(
    session: Session,
    *,
    caller: Caller,
    runtime: Runtime,
    name: str,
    data: EventPropertyDeclare,
) -> tuple[EventPropertyRow, bool]:
    """Declare an event property (idempotent); its type never changes. Returns (row, created)."""
    attributes.lock_schema(session, caller.workspace_id)
    row = session.get(EventPropertyRow, (caller.workspace_id, name))
    if row is not None:
        if row.type != data.type.value:
            raise Conflict(
                f"event property {name!r} is a {row.type}; a type cannot change",
                code="event_property_type_conflict",
            )
        row.description = data.description
        row.inferred = False
        session.flush()
        return row, False
    _add(session, caller.workspace_id, {name: data.type}, runtime, inferred=False)
    row = session.get_one(EventPropertyRow, (caller.workspace_id, name))
    row.description = data.description
    session.flush()
    return row, True


def admit(
    session: Session,
    *,
    workspace_id: str,
    runtime: Runtime,
    properties: Iterable[Mapping[str, Any]],
    typed: bool = True,
) -> None:
    """Declare the undeclared properties these events give a telling value (unless the
    workspace is strict), so that the engine can store them; see
    :func:`services.attributes.admit`, whose rules these are. Names past the limit, and names
    no rule could write, stay undeclared: the engine refuses the events that carry them."""
    if attributes.is_strict(session, workspace_id=workspace_id):
        return
    current = schema(session, workspace_id=workspace_id)
    found = attributes.inferred_types(
        properties, current, typed=typed, reserved=RESERVED_EVENT_FIELDS
    )
    if not found:
        return
    attributes.lock_schema(session, workspace_id)
    current = schema(session, workspace_id=workspace_id)  # another writer may have added some
    room = max(MAX_EVENT_PROPERTIES - len(current), 0)
    new = [name for name in found if name not in current][:room]
    # A column left by a transaction that rolled back keeps its type: declare that one.
    columns = runtime.profiles.event_properties(workspace_id)
    if new:
        wanted = {name: columns.get(name, found[name]) for name in new}
        _add(session, workspace_id, wanted, runtime, inferred=True)


def to_model(row: EventPropertyRow) -> EventPropertyOut:
    """The public shape of an event property."""
    return EventPropertyOut(
        name=row.name,
        type=AttributeType(row.type),
        description=row.description,
        inferred=row.inferred,
        created_at=row.created_at,
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
        .select_from(EventPropertyRow)
        .where(EventPropertyRow.workspace_id == workspace_id)
    )
    if (count or 0) + len(new) > MAX_EVENT_PROPERTIES:
        raise ValidationFailed(
            f"a workspace has at most {MAX_EVENT_PROPERTIES} event properties",
            code="too_many_event_properties",
        )
    current = schema(session, workspace_id=workspace_id)
    runtime.profiles.ensure_event_properties(workspace_id, {**current, **new})
    for name, kind in new.items():
        session.add(
            EventPropertyRow(
                workspace_id=workspace_id, name=name, type=kind.value, inferred=inferred
            )
        )
    session.flush()
