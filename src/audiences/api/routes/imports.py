"""File imports into static audiences, and an import's row errors."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from audiences.api import uploads
from audiences.api.deps import (
    ID_PATTERN,
    AudienceId,
    SessionDep,
    SettingsDep,
    WriteCaller,
    read_session,
)
from audiences.api.preconditions import IDEMPOTENCY_DOC
from audiences.api.problems import responses
from audiences.api.queries import KnownQuery
from audiences.api.routes.jobs import job_location
from audiences.kit.ids import new_id
from audiences.schemas.imports import UPLOAD_BODY, ImportMode
from audiences.schemas.jobs import Job
from audiences.services import audiences, imports, jobs, lifecycle, static_members
from audiences.services.callers import Caller
from audiences.services.import_formats import ImportFormat
from audiences.store.tables import JobRow

router = APIRouter(tags=["imports"], dependencies=[KnownQuery])
UPLOAD_PATHS = re.compile(r"^/v1/(audiences/[^/]+/imports|events/imports)/?$")
"""Paths whose bodies fall under ``AUDIENCES_MAX_UPLOAD_BYTES`` instead of the JSON limit."""
JobId = Annotated[str, PathParam(pattern=ID_PATTERN, description="The job's id.")]
ACCEPTED: dict[int | str, dict[str, Any]] = {
    202: {"model": Job, "description": "Accepted: the job that applies the change."}
}


@router.post(
    "/v1/audiences/{audience_id}/imports",
    status_code=202,
    response_model=Job,
    openapi_extra=UPLOAD_BODY,
    responses={**ACCEPTED, **responses(400, 401, 403, 404, 409, 413, 415, 422, 429)},
)
async def import_members(
    audience_id: AudienceId,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    caller: WriteCaller,
    mode: Annotated[ImportMode, Query(description="`add`, `remove` or `replace`.")] = (
        ImportMode.ADD
    ),
    format: Annotated[
        ImportFormat | None,
        Query(description="The file's format; default from its content type, else `csv`."),
    ] = None,
    id_column: Annotated[
        str | None,
        Query(
            min_length=1, max_length=128, description="The id column (default `id`, or the first)."
        ),
    ] = None,
    attributes: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=4000,
            description="Columns to upsert as profile attributes: `a,b`, or `*` for all others.",
        ),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        Header(alias="Idempotency-Key", pattern=r"^[!-~]{1,255}$", description=IDEMPOTENCY_DOC),
    ] = None,
) -> Response:
    """Import a file of external ids into a static audience, streamed to disk: 202 with the
    `import.rows` job (progress, exact counts, row errors; all of them at `errors.csv`)."""
    # Checked before the upload, not after it, on a read session: the write session would hold
    # SQLite's write lock for as long as the file takes to arrive.
    await run_in_threadpool(_check_target, request, caller, audience_id)
    directory = imports.folder(settings.data_dir, caller.workspace_id, new_id())
    try:
        received = await uploads.receive(request, directory / imports.UPLOAD)
        options = imports.ImportOptions(
            mode=mode.value,
            format=format or received.named_format or ImportFormat.CSV,
            id_column=id_column,
            attributes=attributes,
        )
        job = await run_in_threadpool(
            _accept,
            session,
            caller,
            audience_id,
            directory,
            options,
            received,
            settings,
            idempotency_key,
        )
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    headers = {"Location": _location(request, job)}
    if job.payload.get("upload") != directory.name:
        shutil.rmtree(directory, ignore_errors=True)
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(_job(job), status_code=202, headers=headers)


def _check_target(request: Request, caller: Caller, audience_id: str) -> None:
    with read_session(request) as session:
        audience = audiences.get(session, caller=caller, audience_id=audience_id)
        static_members.require_pushed(audience)
        lifecycle.require(audience, lifecycle.Action.WRITE)


def _accept(
    session: Any,
    caller: Any,
    audience_id: str,
    directory: Path,
    options: imports.ImportOptions,
    received: uploads.Received,
    settings: Any,
    idempotency_key: str | None,
) -> JobRow:
    job = imports.accept(
        session,
        caller=caller,
        audience_id=audience_id,
        upload=directory / imports.UPLOAD,
        options=options,
        digest=received.digest,
        max_attempts=settings.job_max_attempts,
        idempotency_key=idempotency_key,
    )
    return job


def _job(job: JobRow) -> dict[str, Any]:
    return jobs.to_model(job).model_dump(mode="json")


def _location(request: Request, job: JobRow) -> str:
    return job_location(request, job.id)
