"""Evaluation runs of one audience, and their list's filters and sorts."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, select

from audiences.store.repositories.listing import ListSpec, equals
from audiences.store.repositories.scoped import ScopedRepository
from audiences.store.tables import RunRow

RUN_LIST = ListSpec(
    id_column=RunRow.id,
    updated_column=RunRow.started_at,
    sorts={"number": RunRow.number, "started_at": RunRow.started_at},
    default_sort="-number",
    filters={
        "status": equals(RunRow.status),
        "trigger": equals(RunRow.trigger),
    },
)


class RunRepository(ScopedRepository[RunRow]):
    """Runs of one audience in one workspace."""

    row = RunRow
    list_spec = RUN_LIST

    def __init__(self, session: Any, workspace_id: str, audience_id: str) -> None:
        super().__init__(session, workspace_id)
        self.audience_id = audience_id

    def base(self) -> Select[Any]:
        """The audience's runs."""
        return select(RunRow).where(
            RunRow.workspace_id == self.workspace_id, RunRow.audience_id == self.audience_id
        )

    def last_succeeded(self, *, before: int | None = None) -> RunRow | None:
        """The audience's newest succeeded run (numbered below ``before``, when given)."""
        stmt = self.base().where(RunRow.status == "succeeded")
        if before is not None:
            stmt = stmt.where(RunRow.number < before)
        found: RunRow | None = self.session.scalars(
            stmt.order_by(RunRow.number.desc()).limit(1)
        ).first()
        return found
