"""A repository bound to one workspace: the only way services reach workspace-owned rows."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar, Generic, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.base import ExecutableOption

from audiences.schemas.common import ListQuery, PageResult
from audiences.store.repositories.listing import ListSpec, paginate

RowT = TypeVar("RowT")


class ScopedRepository(Generic[RowT]):
    """Statements over one table, each starting from :meth:`base`, which names the workspace.

    Because no method builds a query any other way, a cross-tenant read cannot be written by
    accident: another workspace's id simply finds nothing.
    """

    row: ClassVar[type[Any]]
    list_spec: ClassVar[ListSpec]

    def __init__(self, session: Session, workspace_id: str) -> None:
        self.session = session
        self.workspace_id = workspace_id

    def base(self) -> Select[Any]:
        """Every row of this table in the workspace."""
        return select(self.row).where(self.row.workspace_id == self.workspace_id)

    def get(self, row_id: str, *options: ExecutableOption) -> RowT | None:
        """The row with this id, or None (also when it belongs to another workspace); loader
        ``options`` say which relationships to load with it."""
        found: RowT | None = self.session.scalars(
            self.base().where(self.row.id == row_id).options(*options)
        ).one_or_none()
        return found

    def get_many(self, row_ids: Iterable[str]) -> dict[str, RowT]:
        """Rows by id; missing ids are simply absent."""
        rows: Iterable[Any] = self.session.scalars(
            self.base().where(self.row.id.in_(list(row_ids)))
        )
        return {row.id: row for row in rows}

    def page(self, query: ListQuery) -> PageResult[RowT]:
        """One page under the list conventions."""
        return paginate(self.session, self.base(), self.list_spec, query)

    def add(self, row: RowT) -> RowT:
        """Stage a new row in this workspace and flush, so constraint violations surface here."""
        row.workspace_id = self.workspace_id  # type: ignore[attr-defined]
        self.session.add(row)
        self.session.flush()
        return row

    def delete(self, row: RowT) -> None:
        """Delete a row of this workspace."""
        self.session.delete(row)
        self.session.flush()
