"""Jobs as the API sees them: read, list and cancel; the queue itself is ``audiences.queue``."""

from __future__ import annotations

from sqlalchemy.orm import Session

from audiences import queue
from audiences.errors import NotFound
from audiences.schemas.common import ListQuery, PageResult
from audiences.schemas.jobs import Job, JobError, JobKind, JobProgress, JobState
from audiences.services.callers import Caller
from audiences.store.repositories.jobs import JobRepository
from audiences.store.tables import JobRow


def get(session: Session, *, caller: Caller, job_id: str) -> JobRow:
    """One job of the caller's workspace; :class:`NotFound` for any other id."""
    row = JobRepository(session, caller.workspace_id).get(job_id)
    if row is None:
        raise NotFound(f"no job {job_id!r}", code="job_not_found")
    return row


def list_(session: Session, *, caller: Caller, query: ListQuery) -> PageResult[JobRow]:
    """A page of the workspace's jobs under the list conventions."""
    return JobRepository(session, caller.workspace_id).page(query)


def cancel(session: Session, *, caller: Caller, job_id: str) -> JobRow:
    """Cancel a queued job, or ask a running one to stop; ``job_finished`` (409) if it ended."""
    return queue.cancel(session, job=get(session, caller=caller, job_id=job_id))


def to_model(row: JobRow) -> Job:
    """The public shape of a job."""
    percent = None
    if row.total:
        percent = round(min(100.0, 100.0 * row.processed / row.total), 2)
    elif row.total == 0 and row.state == JobState.SUCCEEDED:
        percent = 100.0
    return Job(
        id=row.id,
        kind=JobKind(row.kind),
        handler=row.handler,
        subject_id=row.subject_id,
        state=JobState(row.state),
        progress=JobProgress(processed=row.processed, total=row.total, percent=percent),
        counts=dict(row.counts or {}),
        result=row.result,
        errors=[JobError.model_validate(error) for error in row.errors or []],
        error_count=row.error_count,
        last_error=row.last_error,
        attempts=row.attempts,
        max_attempts=row.max_attempts,
        cancel_requested=row.cancel_requested,
        run_after=row.run_after,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        updated_at=row.updated_at,
        created_by=row.created_by,
    )
