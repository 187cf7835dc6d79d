"""Job queries scoped to a workspace, and the job list's filters and sorts."""

from __future__ import annotations

from audiences.schemas.jobs import JobKind, JobState
from audiences.store.repositories.listing import ListSpec, enum_filter, equals
from audiences.store.repositories.scoped import ScopedRepository
from audiences.store.tables import JobRow

JOB_LIST = ListSpec(
    id_column=JobRow.id,
    updated_column=JobRow.updated_at,
    sorts={"created_at": JobRow.created_at, "updated_at": JobRow.updated_at},
    default_sort="created_at",
    filters={
        "kind": enum_filter(JobRow.kind, JobKind),
        "state": enum_filter(JobRow.state, JobState),
        "subject_id": equals(JobRow.subject_id),
    },
    search=(JobRow.handler,),
)


class JobRepository(ScopedRepository[JobRow]):
    """Jobs of one workspace."""

    row = JobRow
    list_spec = JOB_LIST
