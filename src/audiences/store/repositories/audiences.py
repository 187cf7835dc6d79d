"""Audience queries, scoped to a workspace, and the audience list's filters and sorts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, exists, func, select

from audiences.schemas.audiences import AudienceKind, LifecycleState
from audiences.store.repositories.listing import ListSpec, enum_filter, equals
from audiences.store.repositories.scoped import ScopedRepository
from audiences.store.tables import AudienceLabelRow, AudienceRow


def _bool_filter(column: Any) -> Any:
    def condition(value: str) -> ColumnElement[bool]:
        if value.lower() not in {"true", "false"}:
            raise ValueError(f"{value!r} is not true or false")
        result: ColumnElement[bool] = column.is_(value.lower() == "true")
        return result

    return condition


def _group_filter(value: str) -> ColumnElement[bool]:
    if value == "none":
        return AudienceRow.group_id.is_(None)
    return AudienceRow.group_id == value


def _members_changed_since(value: str) -> ColumnElement[bool]:
    since = datetime.fromisoformat(value)
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return AudienceRow.members_changed_at >= since


def _label_filter(value: str) -> ColumnElement[bool]:
    return exists().where(
        AudienceLabelRow.audience_id == AudienceRow.id, AudienceLabelRow.label == value
    )


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
        "kind": enum_filter(AudienceRow.kind, AudienceKind),
        "lifecycle_state": enum_filter(AudienceRow.lifecycle_state, LifecycleState),
        "archived": _bool_filter(AudienceRow.archived),
        "group": _group_filter,
        "label": _label_filter,
        "key": equals(AudienceRow.key),
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
