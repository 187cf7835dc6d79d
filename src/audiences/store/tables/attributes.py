"""A workspace's declared (or inferred) profile attributes: what rules are checked against."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from audiences.kit.clock import utcnow
from audiences.store.tables.base import Base, UTCDateTime


class AttributeRow(Base):
    """One attribute: its name (dotted for nested paths), type, and whether it was inferred."""

    __tablename__ = "attributes"

    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    type: Mapped[str] = mapped_column(String(16))
    description: Mapped[str | None] = mapped_column(Text)
    inferred: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
