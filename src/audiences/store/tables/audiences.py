"""Audiences and their labels."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text, UniqueConstraint, func, select
from sqlalchemy.orm import Mapped, column_property, mapped_column, relationship

from audiences.store.tables.base import Base, IdMixin, JSONType, TimestampsMixin, UTCDateTime
from audiences.store.tables.memberships import MembershipRow


class AudienceRow(IdMixin, TimestampsMixin, Base):
    """One audience's definition: rule, lifecycle, refresh policy (its state is a MembershipRow).

    ``version`` is SQLAlchemy's version counter: an UPDATE names the version it read, so of two
    writers holding the same ETag exactly one succeeds.
    """

    __tablename__ = "audiences"
    __table_args__ = (UniqueConstraint("workspace_id", "key"),)

    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    key: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(16))
    rule: Mapped[str | None] = mapped_column(Text)
    group_id: Mapped[str | None] = mapped_column(
        ForeignKey("audience_groups.id", ondelete="RESTRICT"), index=True
    )
    lifecycle_state: Mapped[str] = mapped_column(String(16), default="draft")
    archived: Mapped[bool] = mapped_column(Boolean, default=False)
    refresh_mode: Mapped[str] = mapped_column(String(16), default="manual")
    refresh_interval_seconds: Mapped[int | None] = mapped_column(Integer)
    ttl_days: Mapped[int | None] = mapped_column(Integer)
    extra_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType, default=dict)
    source: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    rule_json: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    dependencies: Mapped[list[str]] = mapped_column(JSONType, default=list)
    version: Mapped[int] = mapped_column(Integer, default=1)

    label_rows: Mapped[list[AudienceLabelRow]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", order_by="AudienceLabelRow.position"
    )

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012

    if TYPE_CHECKING:
        members_changed_at: Mapped[datetime]
        """When its members last changed (its creation until they first do); mapped below,
        loaded only when read, sortable and filterable."""

    @property
    def labels(self) -> list[str]:
        """Labels in the order the client gave them."""
        return [row.label for row in self.label_rows]


# Defined once both tables exist: the memberships row keeps the time (evaluation state, not
# definition), and an audience whose members never changed counts from its creation, so the
# value is never null and sorts and pages the same on every database.
AudienceRow.members_changed_at = column_property(
    func.coalesce(
        select(MembershipRow.members_changed_at)
        .where(MembershipRow.audience_id == AudienceRow.id)
        .correlate_except(MembershipRow)
        .scalar_subquery(),
        AudienceRow.created_at,
        type_=UTCDateTime(),
    ),
    deferred=True,
)


class AudienceLabelRow(Base):
    """One label of an audience; a table of its own so ``label=`` filters are indexed lookups."""

    __tablename__ = "audience_labels"

    audience_id: Mapped[str] = mapped_column(
        ForeignKey("audiences.id", ondelete="CASCADE"), primary_key=True
    )
    label: Mapped[str] = mapped_column(String(100), primary_key=True, index=True)
    position: Mapped[int] = mapped_column(Integer)
