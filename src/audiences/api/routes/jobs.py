"""``/v1/jobs``: list and read jobs (imports, evaluations, exports), and cancel one."""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse

from audiences.api.deps import (
    ID_PATTERN,
    ReadCaller,
    SessionDep,
    SettingsDep,
    WriteCaller,
)
from audiences.api.listing import FIELDS_DOC, page_response, sparse_one, to_list_query
from audiences.api.problems import responses
from audiences.api.queries import KnownQuery
from audiences.schemas.common import names_pattern, page_of
from audiences.schemas.jobs import Job, JobListItem, JobListParams
from audiences.services import imports, jobs

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[KnownQuery])
JobId = Annotated[str, Path(pattern=ID_PATTERN, description="The job's id.")]


@router.get("", response_model=page_of(JobListItem), responses=responses(400, 401, 422, 429))
def list_jobs(
    params: Annotated[JobListParams, Query()],
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    caller: ReadCaller,
) -> Response:
    """List jobs: `kind`, `state` and `subject_id` filters, `q` on the handler, `sort`, paging."""
    query = to_list_query(params, settings, model=Job)
    page = jobs.list_(session, caller=caller, query=query)
    return page_response(
        request, page, query, lambda row: jobs.to_model(row).model_dump(mode="json")
    )


@router.get("/{job_id}", response_model=JobListItem, responses=responses(400, 401, 404, 429))
def get_job(
    job_id: JobId,
    session: SessionDep,
    caller: ReadCaller,
    fields: Annotated[
        str | None,
        Query(max_length=1000, pattern=names_pattern(Job.model_fields), description=FIELDS_DOC),
    ] = None,
) -> Response:
    """One job: its state, progress, counts, errors (the first 1,000), attempts and times."""
    row = jobs.get(session, caller=caller, job_id=job_id)
    return JSONResponse(sparse_one(jobs.to_model(row).model_dump(mode="json"), fields, Job))


@router.post(
    "/{job_id}/cancel", response_model=Job, responses=responses(400, 401, 403, 404, 409, 429)
)
def cancel_job(job_id: JobId, session: SessionDep, caller: WriteCaller) -> Response:
    """Cancel: a queued job at once; a running one stops at its next checkpoint
    (`cancel_requested` is true until it does). 409 `job_finished` if it already ended."""
    row = jobs.cancel(session, caller=caller, job_id=job_id)
    return JSONResponse(jobs.to_model(row).model_dump(mode="json"))


@router.get(
    "/{job_id}/errors.csv",
    responses={
        200: {"content": {"text/csv": {"schema": {"type": "string"}}}},
        **responses(400, 401, 404, 429),
    },
    response_class=Response,
)
def get_job_errors(
    job_id: JobId, session: SessionDep, settings: SettingsDep, caller: ReadCaller
) -> Response:
    """Every problem of a job as CSV (`row,line,code,message`): all refused rows of an import,
    not only the 1,000 kept in the job."""
    job = jobs.get(session, caller=caller, job_id=job_id)
    report = imports.error_report(settings.data_dir, job)
    disposition = {"Content-Disposition": f'attachment; filename="{job.id}-errors.csv"'}
    if isinstance(report, FilePath):
        return FileResponse(report, media_type="text/csv", headers=disposition)
    return StreamingResponse(report, media_type="text/csv", headers=disposition)


JOB_ID_SLOT = "{job_id}"


def job_location(request: Request, job_id: str) -> str:
    """The path of a job (its ``Location``), from the route's path found once per app:
    Starlette's ``url_for`` walks every route on each call, a tenth of a small write's time."""
    state = request.app.state
    template: str | None = getattr(state, "job_path", None)
    if template is None:
        template = str(request.app.url_path_for("get_job", job_id=JOB_ID_SLOT))
        state.job_path = template
    return template.replace(JOB_ID_SLOT, job_id)
