"""Audience group queries, scoped to a workspace, and the group list's filters and sorts."""

from __future__ import annotations

from audiences.store.repositories.listing import ListSpec, equals
from audiences.store.repositories.scoped import ScopedRepository
from audiences.store.tables import AudienceGroupRow

GROUP_LIST = ListSpec(
    id_column=AudienceGroupRow.id,
    updated_column=AudienceGroupRow.updated_at,
    sorts={
        "name": AudienceGroupRow.name,
        "created_at": AudienceGroupRow.created_at,
        "updated_at": AudienceGroupRow.updated_at,
    },
    default_sort="created_at",
    filters={
        "name": equals(AudienceGroupRow.name),
        "description": equals(AudienceGroupRow.description),
    },
    search=(AudienceGroupRow.name, AudienceGroupRow.description),
)


class GroupRepository(ScopedRepository[AudienceGroupRow]):
    """Audience groups of one workspace."""

    row = AudienceGroupRow
    list_spec = GROUP_LIST
