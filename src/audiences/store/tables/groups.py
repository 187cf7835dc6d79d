"""Audience groups: folders of audiences, named uniquely per workspace."""

from __future__ import annotations

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from audiences.store.tables.base import Base, IdMixin, TimestampsMixin


class AudienceGroupRow(IdMixin, TimestampsMixin, Base):
    """A group; ``version`` guards concurrent writes and is the ETag."""

    __tablename__ = "audience_groups"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)

    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012
