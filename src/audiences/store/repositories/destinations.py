"""Destination queries, scoped to a workspace, and the lists of destinations and of one
destination's deliveries."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Select, select

from audiences.store.repositories.listing import ListSpec, equals
from audiences.store.repositories.scoped import ScopedRepository
from audiences.store.tables import DestinationMessageRow, DestinationRow


def _enabled(value: str) -> ColumnElement[bool]:
    if value not in {"true", "false"}:
        raise ValueError(f"{value!r} is not true or false")
    return DestinationRow.enabled.is_(value == "true")


DESTINATION_LIST = ListSpec(
    id_column=DestinationRow.id,
    updated_column=DestinationRow.updated_at,
    sorts={
        "name": DestinationRow.name,
        "created_at": DestinationRow.created_at,
        "updated_at": DestinationRow.updated_at,
    },
    default_sort="created_at",
    filters={
        "name": equals(DestinationRow.name),
        "kind": equals(DestinationRow.kind),
        "enabled": _enabled,
    },
    search=(DestinationRow.name, DestinationRow.description),
)

DELIVERY_LIST = ListSpec(
    id_column=DestinationMessageRow.id,
    updated_column=DestinationMessageRow.created_at,
    sorts={"seq": DestinationMessageRow.seq, "created_at": DestinationMessageRow.created_at},
    default_sort="-seq",
    filters={"status": equals(DestinationMessageRow.status)},
)


class DestinationRepository(ScopedRepository[DestinationRow]):
    """Destinations of one workspace."""

    row = DestinationRow
    list_spec = DESTINATION_LIST

    def by_name(self, name: str) -> DestinationRow | None:
        """The destination with this name, if any."""
        found: DestinationRow | None = self.session.scalars(
            self.base().where(DestinationRow.name == name)
        ).one_or_none()
        return found


class DeliveryRepository(ScopedRepository[DestinationMessageRow]):
    """The messages of one destination in one workspace."""

    row = DestinationMessageRow
    list_spec = DELIVERY_LIST

    def __init__(self, session: Any, workspace_id: str, destination_id: str) -> None:
        super().__init__(session, workspace_id)
        self.destination_id = destination_id

    def base(self) -> Select[Any]:
        """The destination's messages."""
        return select(DestinationMessageRow).where(
            DestinationMessageRow.workspace_id == self.workspace_id,
            DestinationMessageRow.destination_id == self.destination_id,
        )
