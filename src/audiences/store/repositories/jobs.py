"""Job queries scoped to a workspace, and the job list's filters and sorts."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select

from audiences.schemas.jobs import JobKind, JobState
from audiences.store.repositories.listing import ListSpec
from audiences.store.repositories.scoped import ScopedRepository
from audiences.store.tables import JobRow


def _enum_filter(column: Any, allowed: type[Any]) -> Any:
    def apply(stmt: Select[Any], value: str) -> Select[Any]:
        if value not in {member.value for member in allowed}:
            raise ValueError(f"{value!r} is not one of {', '.join(m.value for m in allowed)}")
        return stmt.where(column == value)

    return apply


JOB_LIST = ListSpec(
    id_column=JobRow.id,
    updated_column=JobRow.updated_at,
    sorts={"created_at": JobRow.created_at, "updated_at": JobRow.updated_at},
    default_sort="created_at",
    filters={
        "kind": _enum_filter(JobRow.kind, JobKind),
        "state": _enum_filter(JobRow.state, JobState),
        "subject_id": lambda stmt, value: stmt.where(JobRow.subject_id == value),
    },
    search=(JobRow.handler,),
)


class JobRepository(ScopedRepository[JobRow]):
    """Jobs of one workspace."""

    row = JobRow
    list_spec = JOB_LIST
