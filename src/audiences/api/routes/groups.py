"""``/v1/audience-groups``: create, list, get, replace, patch, delete."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from audiences.api.content import PATCH_BODY, PatchBody, RequireJson
from audiences.api.deps import GroupId, ReadCaller, SessionDep, SettingsDep, WriteCaller
from audiences.api.listing import (
    FIELDS_DOC,
    page_response,
    parse_names,
    sparse_one,
    to_list_query,
)
from audiences.api.preconditions import ExpectedVersion, IdempotencyDep, etag
from audiences.api.problems import responses
from audiences.api.queries import KnownQuery
from audiences.schemas.common import names_pattern, page_of
from audiences.schemas.groups import (
    GROUP_INCLUDES,
    Group,
    GroupListItem,
    GroupListParams,
    GroupWrite,
)
from audiences.services import audiences, groups
from audiences.services.callers import Caller
from audiences.services.patching import Patch
from audiences.store.tables import AudienceGroupRow

router = APIRouter(
    prefix="/v1/audience-groups", tags=["audience groups"], dependencies=[KnownQuery]
)
ONE = responses(400, 401, 404, 429)
WRITE = responses(400, 401, 403, 404, 409, 412, 413, 415, 422, 428, 429)


@router.post(
    "",
    status_code=201,
    response_model=Group,
    dependencies=[RequireJson],
    responses=responses(400, 401, 403, 409, 413, 415, 422, 429),
)
def create_group(
    body: GroupWrite,
    request: Request,
    session: SessionDep,
    caller: WriteCaller,
    idem: IdempotencyDep,
) -> Response:
    """Create a group. Answers 201 with ``Location``; replays under ``Idempotency-Key``."""
    row = groups.create(session, caller=caller, data=body)
    location = str(request.url_for("get_group", group_id=row.id).path)
    rendered = _render(session, caller, [row], frozenset())[row.id]
    return idem.respond(201, rendered, {"Location": location, "ETag": etag(row.version)})


@router.get("", response_model=page_of(GroupListItem), responses=responses(400, 401, 422, 429))
def list_groups(
    params: Annotated[GroupListParams, Query()],
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    caller: ReadCaller,
) -> Response:
    """List groups: `name` filter, `q`, `updated_since`, `sort`, paging, `fields`, `include`."""
    query = to_list_query(params, settings, model=Group, includes=GROUP_INCLUDES)
    page = groups.list_(session, caller=caller, query=query)
    rendered = _render(session, caller, page.items, query.include)
    return page_response(request, page, query, lambda row: rendered[row.id])


@router.get("/{group_id}", response_model=GroupListItem, responses=ONE)
def get_group(
    group_id: GroupId,
    session: SessionDep,
    caller: ReadCaller,
    include: Annotated[
        str | None,
        Query(pattern=names_pattern(GROUP_INCLUDES), description="`audiences` to embed them."),
    ] = None,
    fields: Annotated[
        str | None,
        Query(max_length=1000, pattern=names_pattern(Group.model_fields), description=FIELDS_DOC),
    ] = None,
) -> Response:
    """One group, with its ETag; ``fields=`` trims it as in the list."""
    row = groups.get(session, caller=caller, group_id=group_id)
    wanted = parse_names(include, "include", frozenset(GROUP_INCLUDES)) or frozenset()
    body = _render(session, caller, [row], wanted)[row.id]
    return JSONResponse(sparse_one(body, fields, Group), headers={"ETag": etag(row.version)})


@router.put("/{group_id}", response_model=Group, dependencies=[RequireJson], responses=WRITE)
def replace_group(
    group_id: GroupId,
    body: GroupWrite,
    session: SessionDep,
    caller: WriteCaller,
    version: ExpectedVersion,
) -> Response:
    """Replace the writable fields; send ``If-Match`` to be safe against lost updates."""
    row = groups.replace(
        session, caller=caller, group_id=group_id, data=body, expected_version=version
    )
    return _one(session, caller, row)


@router.patch("/{group_id}", response_model=Group, openapi_extra=PATCH_BODY, responses=WRITE)
def patch_group(
    group_id: GroupId,
    session: SessionDep,
    caller: WriteCaller,
    version: ExpectedVersion,
    patch: Patch = PatchBody,
) -> Response:
    """Edit with JSON Patch (RFC 6902) or JSON merge patch (RFC 7386)."""
    row = groups.patch(
        session, caller=caller, group_id=group_id, patch=patch, expected_version=version
    )
    return _one(session, caller, row)


@router.delete("/{group_id}", status_code=204, responses=WRITE)
def delete_group(
    group_id: GroupId,
    session: SessionDep,
    caller: WriteCaller,
    version: ExpectedVersion,
    detach: Annotated[
        bool, Query(description="Ungroup the group's audiences instead of refusing (409).")
    ] = False,
) -> Response:
    """Delete a group; 409 naming its audiences while it holds any, unless ``detach=true``."""
    groups.delete(
        session, caller=caller, group_id=group_id, expected_version=version, detach=detach
    )
    return Response(status_code=204)


def _one(session: Session, caller: Caller, row: AudienceGroupRow) -> JSONResponse:
    body = _render(session, caller, [row], frozenset())[row.id]
    return JSONResponse(body, headers={"ETag": etag(row.version)})


def _render(
    session: Session, caller: Caller, rows: list[AudienceGroupRow], include: frozenset[str]
) -> dict[str, dict[str, Any]]:
    ids = [row.id for row in rows]
    counts = groups.audience_counts(session, caller=caller, ids=ids)
    members = None
    if "audiences" in include:
        members = audiences.relationships_by_group(session, caller=caller, group_ids=ids)
    rendered = {}
    for row in rows:
        body = groups.to_model(row, audience_count=counts[row.id]).model_dump(
            mode="json", exclude={"audiences"}
        )
        if members is not None:
            body["audiences"] = [ref.model_dump(mode="json") for ref in members[row.id]]
        rendered[row.id] = body
    return rendered
