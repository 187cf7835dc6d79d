"""Profile writes shared by several processes: each workspace's pid high-water mark and row
version, for engines that keep neither themselves (ClickHouse, ``store.profile_writes``)."""

from __future__ import annotations

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from audiences.store.tables.base import Base


class ProfileWriteRow(Base):
    """The highest pid any process was given for a workspace, and the highest row version:
    both only grow, each in a transaction of its own committed before the engine uses them.

    Keyed by the engine's workspace id with no foreign key: the engine writes profiles of a
    workspace whose row the service has not committed yet (a check would wait for that
    transaction, which waits for the engine), and the marks must outlive a deleted workspace's
    row as long as its profile tables do."""

    __tablename__ = "profile_writes"

    workspace_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    pid_high: Mapped[int] = mapped_column(BigInteger, default=0)
    version: Mapped[int] = mapped_column(BigInteger, default=0)
