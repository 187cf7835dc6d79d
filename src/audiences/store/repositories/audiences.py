"""Audience queries, scoped to a workspace, and the audience list's filters and sorts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, exists, func, select

from audiences.schemas.audiences import AudienceKind, LifecycleState
from audiences.store.repositories.listing import ListSpec
from audiences.store.repositories.scoped import ScopedRepository
from audiences.store.tables import AudienceLabelRow, AudienceRow


def _enum_filter(column: Any, allowed: type[Any]) -> Any:
    def apply(stmt: Select[Any], value: str) -> Select[Any]:
        if value not in {member.value for member in allowed}:
            raise ValueError(f"{value!r} is not one of {', '.join(m.value for m in allowed)}")
        return stmt.where(column == value)

    return apply


def _bool_filter(column: Any) -> Any:
    def apply(stmt: Select[Any], value: str) -> Select[Any]:
        if value.lower() not in {"true", "false"}:
            raise ValueError(f"{value!r} is not true or false")
        return stmt.where(column.is_(value.lower() == "true"))

    return apply


def _group_filter(stmt: Select[Any], value: str) -> Select[Any]:
    if value == "none":
        return stmt.where(AudienceRow.group_id.is_(None))
    return stmt.where(AudienceRow.group_id == value)


def _members_changed_since(stmt: Select[Any], value: str) -> Select[Any]:
    since = datetime.fromisoformat(value)
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return stmt.where(AudienceRow.members_changed_at >= since)


def _label_filter(stmt: Select[Any], value: str) -> Select[Any]:
    has_label = exists().where(
        AudienceLabelRow.audience_id == AudienceRow.id, AudienceLabelRow.label == value
    )
    return stmt.where(has_label)


AUDIENCE_LIST = ListSpec(
    id_column=AudienceRow.id,
    updated_column=AudienceRow.updated_at,
    sorts={
        "name": AudienceRow.name,
        "key": AudienceRow.key,
        "created_at": AudienceRow.created_at,
        "updated_at": AudienceRow.updated_at,
        "members_changed_at": AudienceRow.members_changed_at,
    },
    default_sort="created_at",
    filters={
        "kind": _enum_filter(AudienceRow.kind, AudienceKind),
        "lifecycle_state": _enum_filter(AudienceRow.lifecycle_state, LifecycleState),
        "archived": _bool_filter(AudienceRow.archived),
        "group": _group_filter,
        "label": _label_filter,
        "key": lambda stmt, value: stmt.where(AudienceRow.key == value),
        "members_changed_since": _members_changed_since,
    },
    search=(AudienceRow.name, AudienceRow.description),
)


class AudienceRepository(ScopedRepository[AudienceRow]):
    """Audiences of one workspace."""

    row = AudienceRow
    list_spec = AUDIENCE_LIST

    def by_key(self, key: str) -> AudienceRow | None:
        """The audience with this key, if any."""
        found: AudienceRow | None = self.session.scalars(
            self.base().where(AudienceRow.key == key)
        ).one_or_none()
        return found

    def in_groups(self, group_ids: list[str]) -> list[AudienceRow]:
        """Audiences that belong to any of these groups, ordered by name then id."""
        stmt = self.base().where(AudienceRow.group_id.in_(group_ids))
        return list(self.session.scalars(stmt.order_by(AudienceRow.name, AudienceRow.id)))

    def count_by_group(self, group_ids: list[str]) -> dict[str, int]:
        """How many audiences each of these groups holds."""
        stmt = (
            select(AudienceRow.group_id, func.count())
            .where(AudienceRow.workspace_id == self.workspace_id)
            .where(AudienceRow.group_id.in_(group_ids))
            .group_by(AudienceRow.group_id)
        )
        counts: dict[str, int] = {gid: 0 for gid in group_ids}
        for group_id, count in self.session.execute(stmt):
            if group_id is not None:
                counts[group_id] = count
        return counts
