"""Membership of ``/v1/audiences/{id}``: writes by id, refresh, runs, members, changes, export,
preview."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError as PydanticValidationError

from audiences.api.content import RequireJson
from audiences.api.deps import (
    AudienceId,
    ProfileId,
    ReadCaller,
    RuntimeDep,
    SessionDep,
    SettingsDep,
    WriteCaller,
    get_runtime,
    read_session,
)
from audiences.api.listing import FIELDS_DOC, page_response, sparse_one, to_list_query
from audiences.api.preconditions import IdempotencyDep
from audiences.api.problems import responses
from audiences.api.queries import KnownQuery
from audiences.api.routes.jobs import job_location
from audiences.errors import BadRequest, ErrorDetail, InvalidParameter, ValidationFailed
from audiences.kit.cursors import CursorError, decode_cursor, encode_cursor
from audiences.kit.spreadsheets import FORMULA_STARTS, defused
from audiences.schemas.common import MAX_PAGE_SIZE, names_pattern, page_of
from audiences.schemas.jobs import Job
from audiences.schemas.memberships import (
    MEMBER_WRITE_BODY,
    ChangePage,
    MemberPage,
    Membership,
    MemberWrite,
    PreviewRequest,
    PreviewResult,
    Run,
    RunListItem,
    RunListParams,
    plain_ids,
)
from audiences.services import audiences, evaluation, jobs, member_writes, previews, runs
from audiences.services.callers import Caller
from audiences.services.runtime import Runtime
from audiences.store.tables import RunRow

router = APIRouter(prefix="/v1/audiences", tags=["membership"], dependencies=[KnownQuery])
RUN_ID = r"^[A-Za-z0-9_-]{1,64}$"
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="Items per page (default 50).")]
Cursor = Annotated[
    str | None, Query(max_length=200, description="`next_cursor` of the previous page.")
]


async def read_member_write(request: Request, settings: SettingsDep) -> MemberWrite:
    """The body parsed with orjson; a plain list of ids is checked in bulk (a model per id
    costs six times as much), anything else validated in full."""
    try:
        data = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise BadRequest("the body is not valid JSON", code="malformed_json") from None
    limit = settings.max_member_ids_per_call
    listed = data.get("ids", data.get("changes")) if isinstance(data, dict) else None
    if isinstance(listed, list) and len(listed) > limit:
        raise ValidationFailed(
            f"at most {limit} ids per call, got {len(listed)}", code="too_many_ids"
        )
    if (
        isinstance(data, dict)
        and data.keys() == {"action", "ids"}
        and data["action"] in ("add", "remove", "replace")
        and isinstance(data["ids"], list)
        and plain_ids(data["ids"])
    ):
        return MemberWrite.model_construct(action=data["action"], ids=data["ids"], changes=None)
    try:
        return MemberWrite.model_validate(data)
    except PydanticValidationError as exc:
        details = [
            ErrorDetail(str(e["type"]), str(e["msg"]), ("body", *e["loc"])) for e in exc.errors()
        ]
        raise ValidationFailed(
            f"{len(details)} field(s) failed validation", errors=details[:100]
        ) from None


@router.post(
    "/{audience_id}/members",
    status_code=202,
    response_model=Job,
    dependencies=[RequireJson],
    openapi_extra=MEMBER_WRITE_BODY,
    responses={
        202: {"model": Job, "description": "Accepted: the job that applies the change."},
        **responses(400, 401, 403, 404, 409, 413, 415, 422, 429),
    },
)
def write_members(
    audience_id: AudienceId,
    body: Annotated[MemberWrite, Depends(read_member_write)],
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    caller: WriteCaller,
    idem: IdempotencyDep,
) -> Response:
    """Add, remove or replace a static audience's members by external id, or give each id its
    own action (`changes`), at most 10,000: 202 with the job that applies it; its
    `result.indexing_state` says when it is applied."""
    job = member_writes.accept(
        session,
        caller=caller,
        audience_id=audience_id,
        write=body,
        backlog=member_writes.Backlog(
            settings.max_queued_writes_per_audience, settings.max_queued_writes_per_workspace
        ),
        max_attempts=settings.job_max_attempts,
    )
    body_out = jobs.to_model(job).model_dump(mode="json")
    response = idem.respond(202, body_out, {"Location": job_location(request, job.id)})
    # Committed here rather than by the session dependency: on SQLite the write lock is held
    # until the commit, and the dependency's commit waits for a trip through the event loop
    # (a thread from the pool and every request queued there), which the writers queued
    # behind this one would wait out too.
    session.commit()
    return response


@router.post(
    "/preview",
    response_model=PreviewResult,
    dependencies=[RequireJson],
    responses=responses(401, 413, 415, 422, 429),
)
def preview_rule(
    body: PreviewRequest, session: SessionDep, caller: ReadCaller, runtime: RuntimeDep
) -> Response:
    """What a rule would select now: size, a sample, its evaluation mode. Nothing is stored."""
    result = previews.preview(
        session, caller=caller, runtime=runtime, rule=body.rule, sample=body.sample
    )
    return JSONResponse(result.model_dump(mode="json", exclude_none=True))


@router.post(
    "/{audience_id}/preview",
    response_model=PreviewResult,
    dependencies=[RequireJson],
    responses=responses(401, 404, 413, 415, 422, 429),
)
def preview_audience_rule(
    audience_id: AudienceId,
    body: PreviewRequest,
    session: SessionDep,
    caller: ReadCaller,
    runtime: RuntimeDep,
) -> Response:
    """A proposed rule for this audience: its size, who would enter and exit; nothing stored."""
    result = previews.preview(
        session,
        caller=caller,
        runtime=runtime,
        rule=body.rule,
        sample=body.sample,
        audience_id=audience_id,
    )
    return JSONResponse(result.model_dump(mode="json"))


@router.post(
    "/{audience_id}/refresh",
    status_code=202,
    response_model=Run,
    responses=responses(401, 403, 404, 409, 429),
)
def refresh_audience(
    audience_id: AudienceId,
    request: Request,
    session: SessionDep,
    caller: WriteCaller,
    runtime: RuntimeDep,
) -> Response:
    """Evaluate a dynamic audience now: 202 with the run (``Location`` points at it)."""
    audience = audiences.get(session, caller=caller, audience_id=audience_id)
    run = evaluation.refresh(session, runtime=runtime, audience=audience, trigger="manual")
    location = str(request.url_for("get_run", audience_id=audience.id, run_id=run.id).path)
    return JSONResponse(_run(run), status_code=202, headers={"Location": location})


@router.get(
    "/{audience_id}/runs",
    response_model=page_of(RunListItem),
    responses=responses(400, 401, 404, 422, 429),
)
def list_runs(
    audience_id: AudienceId,
    params: Annotated[RunListParams, Query()],
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    caller: ReadCaller,
) -> Response:
    """The audience's evaluation runs, newest first."""
    query = to_list_query(params, settings, model=Run)
    page = runs.list_(session, caller=caller, audience_id=audience_id, query=query)
    return page_response(request, page, query, _run)


@router.get(
    "/{audience_id}/runs/{run_id}", response_model=RunListItem, responses=responses(401, 404, 429)
)
def get_run(
    audience_id: AudienceId,
    run_id: Annotated[str, Path(pattern=RUN_ID, description="The run's id.")],
    session: SessionDep,
    caller: ReadCaller,
    fields: Annotated[
        str | None,
        Query(max_length=1000, pattern=names_pattern(Run.model_fields), description=FIELDS_DOC),
    ] = None,
) -> Response:
    """One run."""
    run = runs.get(session, caller=caller, audience_id=audience_id, run_id=run_id)
    return JSONResponse(sparse_one(_run(run), fields, Run))


@router.get(
    "/{audience_id}/members",
    response_model=MemberPage,
    responses=responses(400, 401, 404, 409, 422, 429),
)
def list_members(
    audience_id: AudienceId,
    session: SessionDep,
    caller: ReadCaller,
    runtime: RuntimeDep,
    limit: Limit = 50,
    cursor: Cursor = None,
    as_of: Annotated[
        str | None, Query(pattern=RUN_ID, description="A run id: the members as of that run.")
    ] = None,
) -> Response:
    """Members by external id, in a stable order, with ``computed_at`` (as of)."""
    after = _after(cursor, as_of)
    found = runs.members(
        session,
        caller=caller,
        runtime=runtime,
        audience_id=audience_id,
        after=after,
        limit=limit,
        as_of=as_of,
    )
    next_cursor = _cursor(found.last_pid, as_of) if found.has_more else None
    body = {
        "data": [{"id": external} for external in found.ids],
        "has_more": found.has_more,
        "next_cursor": next_cursor,
        "total": found.total,
        "computed_at": _iso(found.computed_at),
    }
    return JSONResponse(body)


@router.get(
    "/{audience_id}/members/{profile_id}",
    response_model=Membership,
    responses=responses(401, 404, 429),
)
async def get_membership(
    audience_id: AudienceId,
    profile_id: ProfileId,
    request: Request,
    caller: ReadCaller,
    explain: Annotated[bool, Query(description="Explain by the rule, evaluated now.")] = False,
) -> Response:
    """Is this profile a member (as of ``computed_at``); with ``explain=true``, why by the rule."""
    runtime = get_runtime(request)  # not a dependency: one less level per request
    # The hottest read: answered on the event loop from the process's caches when it can, in a
    # thread with a session of its own when it cannot (which fills the caches).
    answer = None
    if not explain:
        answer = runs.cached_is_member(
            runtime, caller=caller, audience_id=audience_id, external_id=profile_id
        )
    if answer is None:
        answer = await run_in_threadpool(
            _is_member, request, caller, runtime, audience_id, profile_id, explain
        )
    return _membership(audience_id, profile_id, answer, explain=explain)


def _membership(
    audience_id: str, profile_id: str, answer: runs.MemberAnswer, *, explain: bool
) -> Response:
    body: dict[str, Any] = {
        "audience_id": audience_id,
        "profile_id": profile_id,
        "member": answer.member,
        "computed_at": _iso(answer.computed_at),
    }
    if explain:
        body["explanation"] = answer.explanation
    return JSONResponse(body)


def _is_member(
    request: Request,
    caller: Caller,
    runtime: Runtime,
    audience_id: str,
    profile_id: str,
    explain: bool,
) -> runs.MemberAnswer:
    with read_session(request) as session:
        return runs.is_member(
            session,
            caller=caller,
            runtime=runtime,
            audience_id=audience_id,
            external_id=profile_id,
            explain=explain,
        )


@router.get(
    "/{audience_id}/changes",
    response_model=ChangePage,
    responses=responses(400, 401, 404, 409, 422, 429),
)
def list_changes(
    audience_id: AudienceId,
    session: SessionDep,
    caller: ReadCaller,
    runtime: RuntimeDep,
    since: Annotated[
        str | None,
        Query(
            pattern=RUN_ID,
            description="A run id: changes since that run. Without it: the latest run's changes.",
        ),
    ] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Response:
    """Who entered and who exited since a run (or in the latest run), in a stable order, with
    the totals and the runs they lie between."""
    scope = since or LATEST
    after = _after(cursor, scope)
    found = runs.changes(
        session,
        caller=caller,
        runtime=runtime,
        audience_id=audience_id,
        since=since,
        after=after,
        limit=limit,
        run_id=None if since is not None or cursor is None else _pinned_run(cursor),
    )
    next_cursor = None
    if found.has_more and found.last_pid is not None:
        pinned = {} if since is not None else {"r": found.run_id}
        next_cursor = encode_cursor({"p": found.last_pid, "s": scope, **pinned})
    body = {
        "data": [{"id": external, "change": change} for external, change in found.changes],
        "has_more": found.has_more,
        "next_cursor": next_cursor,
        "entered": found.entered,
        "exited": found.exited,
        "computed_at": _iso(found.computed_at),
        "since": found.since,
        "run_id": found.run_id,
    }
    return JSONResponse(body)


LATEST = "\x00latest"
"""The cursor scope of the latest run's changes (no run id has a NUL)."""


def _pinned_run(cursor: str) -> str | None:
    """The run a cursor of the latest run's changes was issued for (checked by ``_after``)."""
    run_id = decode_cursor(cursor).get("r")
    if run_id is not None and not isinstance(run_id, str):
        raise InvalidParameter("invalid cursor: no run", code="invalid_cursor")
    return run_id


@router.get(
    "/{audience_id}/export",
    responses={
        200: {"content": {"text/csv": {}, "application/x-ndjson": {}}},
        **responses(401, 404, 422, 429),
    },
)
def export_members(
    audience_id: AudienceId,
    session: SessionDep,
    caller: ReadCaller,
    runtime: RuntimeDep,
    format: Annotated[
        Literal["csv", "ndjson"], Query(description="`csv` (default) or `ndjson`.")
    ] = "csv",
    raw: Annotated[
        bool,
        Query(
            description=(
                "CSV only: ids exactly as stored. By default an id a spreadsheet would run as a "
                "formula (starting with `=`, `+`, `-` or `@`) is written with a leading `'`."
            )
        ),
    ] = False,
) -> Response:
    """Every member's external id, streamed; ``X-Computed-At`` says as of when.

    In CSV, ids that a spreadsheet would run as formulas get a leading ``'`` unless ``raw``.
    """
    chunks, computed_at = runs.export(
        session, caller=caller, runtime=runtime, audience_id=audience_id
    )
    media = "text/csv" if format == "csv" else "application/x-ndjson"
    headers = {"Content-Disposition": f'attachment; filename="{audience_id}.{format}"'}
    if computed_at is not None:
        headers["X-Computed-At"] = computed_at.isoformat()
    return StreamingResponse(_lines(chunks, format, raw), media_type=media, headers=headers)


def _lines(chunks: Iterator[list[str]], format: str, raw: bool) -> Iterator[bytes]:
    if format == "csv":
        yield b"id\n"
    for chunk in chunks:
        if format == "csv":
            yield "".join(_csv_cell(external, raw) + "\n" for external in chunk).encode()
        else:
            yield b"".join(orjson.dumps({"id": external}) + b"\n" for external in chunk)


def _csv_cell(value: str, raw: bool) -> str:
    if not raw:
        value = defused(value)
    if any(char in value for char in ',"\n\r') or value.startswith(FORMULA_STARTS):
        return '"' + value.replace('"', '""') + '"'
    return value


def _after(cursor: str | None, scope: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        payload = decode_cursor(cursor)
        if payload.get("s") != scope or not isinstance(payload.get("p"), int):
            raise CursorError("cursor was issued for another listing")
        return int(payload["p"])
    except CursorError as exc:
        raise InvalidParameter(f"invalid cursor: {exc}", code="invalid_cursor") from exc


def _cursor(last_pid: int | None, scope: str | None) -> str | None:
    return None if last_pid is None else encode_cursor({"p": last_pid, "s": scope})


def _run(run: RunRow) -> dict[str, Any]:
    return Run(
        id=run.id,
        audience_id=run.audience_id,
        number=run.number,
        trigger=run.trigger,
        status=run.status,
        rule=run.rule,
        started_at=run.started_at,
        finished_at=run.finished_at,
        size=run.size,
        entered=run.entered,
        exited=run.exited,
        error=run.error,
        members_kept=run.members_kept,
    ).model_dump(mode="json")


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat()
