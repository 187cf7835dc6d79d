"""``/v1/api-keys``: mint (the token is shown once), list, get and revoke keys. Admin only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse

from audiences.api.content import RequireJson
from audiences.api.deps import AdminCaller, KeyId, SessionDep, SettingsDep
from audiences.api.listing import FIELDS_DOC, page_response, sparse_one, to_list_query
from audiences.api.preconditions import IdempotencyDep
from audiences.api.problems import responses
from audiences.api.queries import KnownQuery
from audiences.schemas.api_keys import (
    ApiKey,
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyListItem,
    ApiKeyListParams,
)
from audiences.schemas.common import names_pattern, page_of
from audiences.services import api_keys
from audiences.store.tables import WorkspaceRow

router = APIRouter(prefix="/v1/api-keys", tags=["api keys"], dependencies=[KnownQuery])


@router.post(
    "",
    status_code=201,
    response_model=ApiKeyCreated,
    dependencies=[RequireJson],
    responses=responses(400, 401, 403, 409, 413, 415, 422, 429),
)
def create_api_key(
    body: ApiKeyCreate,
    request: Request,
    session: SessionDep,
    caller: AdminCaller,
    idem: IdempotencyDep,
) -> Response:
    """Mint a key in the caller's workspace. The token is in this response and nowhere else."""
    workspace = session.get_one(WorkspaceRow, caller.workspace_id)
    row, token = api_keys.create(session, workspace=workspace, data=body, actor=caller.actor)
    created = ApiKeyCreated(
        **api_keys.to_model(row, caller.workspace_slug).model_dump(), token=token
    )
    location = str(request.url_for("get_api_key", key_id=row.id).path)
    return idem.respond(201, created.model_dump(mode="json"), {"Location": location})


@router.get(
    "", response_model=page_of(ApiKeyListItem), responses=responses(400, 401, 403, 422, 429)
)
def list_api_keys(
    params: Annotated[ApiKeyListParams, Query()],
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    caller: AdminCaller,
) -> Response:
    """List the workspace's keys, revoked ones included (never their tokens)."""
    query = to_list_query(params, settings, model=ApiKey)
    page = api_keys.list_(session, caller=caller, query=query)
    return page_response(
        request,
        page,
        query,
        lambda row: api_keys.to_model(row, caller.workspace_slug).model_dump(mode="json"),
    )


@router.get("/{key_id}", response_model=ApiKeyListItem, responses=responses(401, 403, 404, 429))
def get_api_key(
    key_id: KeyId,
    session: SessionDep,
    caller: AdminCaller,
    fields: Annotated[
        str | None,
        Query(max_length=1000, pattern=names_pattern(ApiKey.model_fields), description=FIELDS_DOC),
    ] = None,
) -> Response:
    """One key (never its token)."""
    row = api_keys.get(session, caller=caller, key_id=key_id)
    body = api_keys.to_model(row, caller.workspace_slug).model_dump(mode="json")
    return JSONResponse(sparse_one(body, fields, ApiKey))


@router.delete("/{key_id}", status_code=204, responses=responses(401, 403, 404, 429))
def revoke_api_key(key_id: KeyId, session: SessionDep, caller: AdminCaller) -> Response:
    """Revoke a key: from now on it answers 401. Revoking twice is harmless."""
    api_keys.revoke(session, caller=caller, key_id=key_id)
    return Response(status_code=204)
