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

from sqlalchemy import select
from sqlalchemy.orm import Session

from audiences.errors import NotFound
from audiences.schemas.attributes import AttributeType
from audiences.schemas.events import (
    RESERVED_EVENT_FIELDS,
    EventPropertyDeclare,
    EventPropertyOut,
    EventSchema,
)
from audiences.services import attributes, declarations
from audiences.services.callers import Caller
from audiences.services.declarations import EVENT_PROPERTIES
from audiences.services.runtime import Runtime
from audiences.store.tables import EventNameRow, EventPropertyRow


def schema(session: Session, *, workspace_id: str) -> dict[str, AttributeType]:
    """Every event property of the workspace and its type."""
    return declarations.schema(session, kind=EVENT_PROPERTIES, workspace_id=workspace_id)


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
    return declarations.declare(
        session,
        kind=EVENT_PROPERTIES,
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
    given = list(properties)
    if set(map(type, given)) <= {dict} and set().union(*given) <= current.keys():
        return  # every name declared: nothing to infer (one C pass, not a step per event)
    found = attributes.inferred_types(given, current, typed=typed, reserved=RESERVED_EVENT_FIELDS)
    if found:
        declarations.declare_inferred(
            session,
            kind=EVENT_PROPERTIES,
            workspace_id=workspace_id,
            profiles=runtime.profiles,
            found=found,
        )


def to_model(row: EventPropertyRow) -> EventPropertyOut:
    """The public shape of an event property."""
    return EventPropertyOut(
        name=row.name,
        type=AttributeType(row.type),
        description=row.description,
        inferred=row.inferred,
        created_at=row.created_at,
    )
