"""``/v1/event-properties``: the workspace's event property schema (one type per name)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from audiences.api.content import RequireJson
from audiences.api.deps import EventPropertyName, ReadCaller, RuntimeDep, SessionDep, WriteCaller
from audiences.api.problems import responses
from audiences.api.queries import KnownQuery
from audiences.schemas.events import EventPropertyDeclare, EventPropertyOut
from audiences.services import event_properties

router = APIRouter(prefix="/v1/event-properties", tags=["events"], dependencies=[KnownQuery])


@router.get("", response_model=list[EventPropertyOut], responses=responses(401, 429))
def list_event_properties(session: SessionDep, caller: ReadCaller) -> Response:
    """Every event property of the workspace, by name (at most 500, so never paged)."""
    rows = event_properties.list_(session, caller=caller)
    return JSONResponse([event_properties.to_model(row).model_dump(mode="json") for row in rows])


@router.get("/{name}", response_model=EventPropertyOut, responses=responses(401, 404, 429))
def get_event_property(
    name: EventPropertyName, session: SessionDep, caller: ReadCaller
) -> Response:
    """One event property."""
    row = event_properties.get(session, caller=caller, name=name)
    return JSONResponse(event_properties.to_model(row).model_dump(mode="json"))


@router.put(
    "/{name}",
    response_model=EventPropertyOut,
    dependencies=[RequireJson],
    responses={201: {"model": EventPropertyOut}, **responses(401, 403, 409, 413, 415, 422, 429)},
)
def declare_event_property(
    name: EventPropertyName,
    body: EventPropertyDeclare,
    session: SessionDep,
    caller: WriteCaller,
    runtime: RuntimeDep,
) -> Response:
    """Declare an event property (201) or update its description (200); its type never
    changes (409). It is one type across every event name."""
    row, created = event_properties.declare(
        session, caller=caller, runtime=runtime, name=name, data=body
    )
    return JSONResponse(
        event_properties.to_model(row).model_dump(mode="json"), status_code=201 if created else 200
    )
