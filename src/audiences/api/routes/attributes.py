"""``/v1/attributes``: the workspace's profile attribute schema."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from audiences.api.content import RequireJson
from audiences.api.deps import AttributeName, ReadCaller, RuntimeDep, SessionDep, WriteCaller
from audiences.api.problems import responses
from audiences.api.queries import KnownQuery
from audiences.schemas.attributes import AttributeDeclare, AttributeOut
from audiences.services import attributes

router = APIRouter(prefix="/v1/attributes", tags=["profiles"], dependencies=[KnownQuery])


@router.get("", response_model=list[AttributeOut], responses=responses(401, 429))
def list_attributes(session: SessionDep, caller: ReadCaller) -> Response:
    """Every attribute of the workspace, by name (at most 500, so never paged)."""
    rows = attributes.list_(session, caller=caller)
    return JSONResponse([attributes.to_model(row).model_dump(mode="json") for row in rows])


@router.get("/{name}", response_model=AttributeOut, responses=responses(401, 404, 429))
def get_attribute(name: AttributeName, session: SessionDep, caller: ReadCaller) -> Response:
    """One attribute."""
    row = attributes.get(session, caller=caller, name=name)
    return JSONResponse(attributes.to_model(row).model_dump(mode="json"))


@router.put(
    "/{name}",
    response_model=AttributeOut,
    dependencies=[RequireJson],
    responses={201: {"model": AttributeOut}, **responses(401, 403, 409, 413, 415, 422, 429)},
)
def declare_attribute(
    name: AttributeName,
    body: AttributeDeclare,
    session: SessionDep,
    caller: WriteCaller,
    runtime: RuntimeDep,
) -> Response:
    """Declare an attribute (201) or update its description (200); its type never changes (409).

    Adding an attribute is an online change: values already stored under that name in the
    profiles' undeclared attributes move into the new typed column.
    """
    row, created = attributes.declare(session, caller=caller, runtime=runtime, name=name, data=body)
    return JSONResponse(
        attributes.to_model(row).model_dump(mode="json"), status_code=201 if created else 200
    )
