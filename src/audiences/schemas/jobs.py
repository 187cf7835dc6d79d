"""Job response bodies and the job list's parameters; the job states and kinds."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from audiences.schemas.common import (
    ID_PATTERN,
    ListFilter,
    ListParams,
    enum_values,
    names_pattern,
    sort_pattern,
    sparse_model,
)


class JobKind(StrEnum):
    """What sort of long work a job does."""

    IMPORT = "import"
    EVALUATION = "evaluation"
    EXPORT = "export"
    MAINTENANCE = "maintenance"
    SYNC = "sync"
    DELIVERY = "delivery"


class JobState(StrEnum):
    """Where a job is in its life: waiting, leased to a worker, or finished one of three ways."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
"""States a job never leaves."""


class JobProgress(BaseModel):
    """How far the job got: items processed of ``total`` (null while unknown)."""

    processed: int = Field(description="Items done so far; never goes backwards.")
    total: int | None = Field(default=None, description="Items to do, once the job knows.")
    percent: float | None = Field(
        default=None, description="`processed / total` as a percentage, 0-100, when known."
    )


class JobError(BaseModel):
    """One problem a job reported: a failed attempt, or a row it could not process."""

    model_config = ConfigDict(extra="allow")

    code: str
    message: str
    attempt: int | None = Field(default=None, description="The attempt that reported it.")


class Job(BaseModel):
    """A job as the API returns it: state, progress, counts, errors and timing."""

    id: str
    kind: JobKind
    handler: str = Field(description="What runs it, as `domain.verb` (`evaluation.run`).")
    subject_id: str | None = Field(
        default=None, description="The resource the job works on (an audience id), if any."
    )
    state: JobState
    progress: JobProgress
    counts: dict[str, int] = Field(description="Named counters (`inserted`, `skipped`, …).")
    result: Any = Field(default=None, description="What the job produced, once it succeeded.")
    errors: list[JobError] = Field(description="The first 1,000 problems reported.")
    error_count: int = Field(description="All problems reported, including those not kept.")
    last_error: str | None = Field(default=None, description="Why the last attempt failed.")
    attempts: int = Field(description="Attempts started so far (a retry counts one more).")
    max_attempts: int
    cancel_requested: bool = Field(description="Cancel was asked while the job was running.")
    run_after: datetime = Field(description="A queued job does not start before this time.")
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime
    created_by: str | None = None


JOB_SORTS = ("created_at", "updated_at", "id")


class JobListParams(ListParams):
    """Query parameters of the job list: the common ones plus kind, state and subject filters."""

    sort: str | None = Field(
        default=None,
        pattern=sort_pattern(JOB_SORTS),
        description="One of " + ", ".join(JOB_SORTS) + "; `-` for descending.",
    )
    q: str | None = Field(
        default=None, max_length=200, description="Case-insensitive search in the handler name."
    )
    fields: str | None = Field(default=None, pattern=names_pattern(Job.model_fields))
    include: str | None = Field(default=None, pattern="^$", description="Nothing to include.")
    kind: Annotated[list[str] | None, ListFilter(enum_values(JobKind))] = Field(
        default=None, description="Of this kind. Several: repeat it or use commas."
    )
    state: Annotated[list[str] | None, ListFilter(enum_values(JobState))] = Field(
        default=None, description="In this state. Several: repeat it or use commas."
    )
    subject_id: Annotated[list[str] | None, ListFilter(ID_PATTERN)] = Field(
        default=None,
        description="Working on this resource (an id). Several: repeat it or use commas.",
    )


JobListItem = sparse_model(Job, "JobListItem")
"""A job in a list: every field present unless ``fields=`` asks for fewer."""
