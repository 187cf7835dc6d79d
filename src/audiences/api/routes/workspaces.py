"""``/v1/workspace/settings``: the caller's workspace settings (changed by admins)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from audiences.api.content import RequireJson
from audiences.api.deps import AdminCaller, ReadCaller, SessionDep
from audiences.api.problems import responses
from audiences.api.queries import KnownQuery
from audiences.schemas.workspaces import WorkspaceSettings, WorkspaceSettingsUpdate
from audiences.services import workspaces

router = APIRouter(prefix="/v1/workspace", tags=["workspace"], dependencies=[KnownQuery])


@router.get("/settings", response_model=WorkspaceSettings, responses=responses(401, 429))
def get_settings(session: SessionDep, caller: ReadCaller) -> Response:
    """The workspace's settings."""
    found = workspaces.settings(session, caller=caller)
    return JSONResponse(found.model_dump(mode="json"))


@router.put(
    "/settings",
    response_model=WorkspaceSettings,
    dependencies=[RequireJson],
    responses=responses(401, 403, 413, 415, 422, 429),
)
def put_settings(
    body: WorkspaceSettingsUpdate, session: SessionDep, caller: AdminCaller
) -> Response:
    """Replace the workspace's settings (admin keys only)."""
    found = workspaces.update_settings(session, caller=caller, data=body)
    return JSONResponse(found.model_dump(mode="json"))
