"""``/v1/audiences``: create, list, get, replace, patch, delete, bulk-get, sync."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from audiences.api.content import PATCH_BODY, PatchBody, RequireJson
from audiences.api.deps import (
    AudienceId,
    ReadCaller,
    SessionDep,
    SettingsDep,
    WriteCaller,
    get_runtime,
)
from audiences.api.listing import (
    FIELDS_DOC,
    page_response,
    parse_names,
    sparse_one,
    to_list_query,
)
from audiences.api.preconditions import ExpectedVersion, IdempotencyDep, etag
from audiences.api.problems import problem_body, request_id_of, responses
from audiences.api.queries import KnownQuery
from audiences.api.routes.jobs import job_location
from audiences.config import Settings
from audiences.errors import NotFound, ValidationFailed
from audiences.schemas.audiences import (
    AUDIENCE_INCLUDES,
    Audience,
    AudienceListItem,
    AudienceListParams,
    AudienceWrite,
    BulkGet,
    BulkResult,
)
from audiences.schemas.common import names_pattern, page_of
from audiences.schemas.jobs import Job
from audiences.services import audiences, groups, jobs, sync_sources, syncs
from audiences.services.callers import Caller
from audiences.services.patching import Patch
from audiences.services.sync_rules import SourceRules
from audiences.store.tables import AudienceRow

router = APIRouter(prefix="/v1/audiences", tags=["audiences"], dependencies=[KnownQuery])
ONE = responses(401, 404, 429)
WRITE = responses(400, 401, 403, 404, 409, 412, 413, 415, 422, 428, 429)


@router.post(
    "",
    status_code=201,
    response_model=Audience,
    dependencies=[RequireJson],
    responses=responses(400, 401, 403, 409, 413, 415, 422, 429),
)
def create_audience(
    body: AudienceWrite,
    request: Request,
    session: SessionDep,
    caller: WriteCaller,
    idem: IdempotencyDep,
    settings: SettingsDep,
) -> Response:
    """Create an audience. Answers 201 with ``Location``; replays under ``Idempotency-Key``."""
    row = audiences.create(
        session,
        caller=caller,
        data=body,
        min_interval=settings.min_refresh_interval_seconds,
        sources=_sources(request, settings),
    )
    location = str(request.url_for("get_audience", audience_id=row.id).path)
    rendered = _render(session, caller, [row], frozenset())[row.id]
    return idem.respond(201, rendered, {"Location": location, "ETag": etag(row.version)})


@router.get("", response_model=page_of(AudienceListItem), responses=responses(400, 401, 422, 429))
def list_audiences(
    params: Annotated[AudienceListParams, Query()],
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    caller: ReadCaller,
) -> Response:
    """List audiences: filters, `q`, `updated_since`, `sort`, paging, `fields`, `include`."""
    query = to_list_query(params, settings, model=Audience, includes=AUDIENCE_INCLUDES)
    page = audiences.list_(session, caller=caller, query=query)
    rendered = _render(session, caller, page.items, query.include)
    return page_response(request, page, query, lambda row: rendered[row.id])


@router.post(
    "/bulk-get",
    status_code=207,
    response_model=BulkResult,
    dependencies=[RequireJson],
    responses=responses(400, 401, 413, 415, 422, 429),
)
def bulk_get_audiences(
    body: BulkGet, request: Request, session: SessionDep, settings: SettingsDep, caller: ReadCaller
) -> Response:
    """Fetch many audiences at once: 207 with a status and a body or a problem per id."""
    if len(body.ids) > settings.max_ids_per_call:
        raise ValidationFailed(
            f"at most {settings.max_ids_per_call} ids per call, got {len(body.ids)}",
            code="too_many_ids",
        )
    found = audiences.get_many(session, caller=caller, ids=body.ids)
    rendered = _render(session, caller, list(found.values()), frozenset())
    results: list[dict[str, Any]] = []
    for audience_id in body.ids:
        row = found.get(audience_id)
        if row is None:
            missing = NotFound(f"no audience {audience_id!r}", code="audience_not_found")
            problem = problem_body(missing, request_id_of(request))
            results.append({"id": audience_id, "status": 404, "problem": problem})
        else:
            results.append({"id": audience_id, "status": 200, "body": rendered[row.id]})
    return JSONResponse({"results": results}, status_code=207)


@router.get("/{audience_id}", response_model=AudienceListItem, responses=ONE)
def get_audience(
    audience_id: AudienceId,
    session: SessionDep,
    caller: ReadCaller,
    include: Annotated[
        str | None,
        Query(pattern=names_pattern(AUDIENCE_INCLUDES), description="`group` to embed the group."),
    ] = None,
    fields: Annotated[
        str | None,
        Query(
            max_length=1000, pattern=names_pattern(Audience.model_fields), description=FIELDS_DOC
        ),
    ] = None,
) -> Response:
    """One audience, with its ETag; ``fields=`` trims it as in the list."""
    row = audiences.get(session, caller=caller, audience_id=audience_id)
    wanted = parse_names(include, "include", frozenset(AUDIENCE_INCLUDES)) or frozenset()
    body = _render(session, caller, [row], wanted)[row.id]
    return JSONResponse(sparse_one(body, fields, Audience), headers={"ETag": etag(row.version)})


@router.put("/{audience_id}", response_model=Audience, dependencies=[RequireJson], responses=WRITE)
def replace_audience(
    audience_id: AudienceId,
    body: AudienceWrite,
    request: Request,
    session: SessionDep,
    caller: WriteCaller,
    version: ExpectedVersion,
    settings: SettingsDep,
) -> Response:
    """Replace every writable field; send ``If-Match`` to be safe against lost updates."""
    row = audiences.replace(
        session,
        caller=caller,
        audience_id=audience_id,
        data=body,
        expected_version=version,
        min_interval=settings.min_refresh_interval_seconds,
        sources=_sources(request, settings),
    )
    return _one(session, caller, row)


@router.patch("/{audience_id}", response_model=Audience, openapi_extra=PATCH_BODY, responses=WRITE)
def patch_audience(
    audience_id: AudienceId,
    request: Request,
    session: SessionDep,
    caller: WriteCaller,
    version: ExpectedVersion,
    settings: SettingsDep,
    patch: Patch = PatchBody,
) -> Response:
    """Edit with JSON Patch (RFC 6902, `test` honoured) or JSON merge patch (RFC 7386)."""
    row = audiences.patch(
        session,
        caller=caller,
        audience_id=audience_id,
        patch=patch,
        expected_version=version,
        min_interval=settings.min_refresh_interval_seconds,
        sources=_sources(request, settings),
    )
    return _one(session, caller, row)


@router.delete("/{audience_id}", status_code=204, responses=WRITE)
def delete_audience(
    audience_id: AudienceId, session: SessionDep, caller: WriteCaller, version: ExpectedVersion
) -> Response:
    """Delete an audience."""
    audiences.delete(session, caller=caller, audience_id=audience_id, expected_version=version)
    return Response(status_code=204)


@router.post(
    "/{audience_id}/sync",
    status_code=202,
    response_model=Job,
    responses={
        202: {"model": Job, "description": "Accepted: the job of the sync."},
        **responses(400, 401, 403, 404, 409, 422, 429),
    },
)
def sync_audience(
    audience_id: AudienceId,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    caller: WriteCaller,
    idem: IdempotencyDep,
) -> Response:
    """Sync an external audience with its file or SQL source now: 202 with the job (the one
    already queued or running, if any); the audience's `sync` follows it."""
    job = syncs.start(
        session, caller=caller, audience_id=audience_id, max_attempts=settings.job_max_attempts
    )
    body = jobs.to_model(job).model_dump(mode="json")
    return idem.respond(202, body, {"Location": job_location(request, job.id)})


def _sources(request: Request, settings: Settings) -> SourceRules:
    """What sources may name on this deployment, in its profile engine's SQL."""
    return sync_sources.rules_of(settings, dialect=get_runtime(request).profiles.dialect)


def _one(session: Session, caller: Caller, row: AudienceRow) -> JSONResponse:
    body = _render(session, caller, [row], frozenset())[row.id]
    return JSONResponse(body, headers={"ETag": etag(row.version)})


def _render(
    session: Session, caller: Caller, rows: list[AudienceRow], include: frozenset[str]
) -> dict[str, dict[str, Any]]:
    refs = None
    if "group" in include:
        group_ids = sorted({row.group_id for row in rows if row.group_id})
        refs = groups.relationships(session, caller=caller, ids=group_ids)
    ctx = audiences.context(session, workspace_id=caller.workspace_id, rows=rows)
    rendered = {}
    for row in rows:
        body = audiences.to_model(row, ctx).model_dump(mode="json", exclude={"group"})
        if refs is not None:
            ref = refs.get(row.group_id or "")
            body["group"] = None if ref is None else ref.model_dump(mode="json", exclude_none=True)
        rendered[row.id] = body
    return rendered
