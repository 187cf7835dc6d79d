"""Profile writes shared by several processes: each workspace's pid high-water mark and row
version, for engines that keep neither themselves (ClickHouse, ``store.profile_writes``)."""

from __future__ import annotations

from sqlalchemy import BigInteger, ForeignKey
from sqlalchemy.orm import Mapped, mapped_column

from audiences.store.tables.base import Base


class ProfileWriteRow(Base):
    """The highest pid any process was given for a workspace, and the highest row version:
    both only grow, each in a transaction of its own committed before the engine uses them."""

    __tablename__ = "profile_writes"

    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    pid_high: Mapped[int] = mapped_column(BigInteger, default=0)
    version: Mapped[int] = mapped_column(BigInteger, default=0)
