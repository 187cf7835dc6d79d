"""Static audiences: members by the day they joined, and the membership writes in their order."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from audiences.kit.clock import utcnow
from audiences.store.tables.base import Base, UTCDateTime


class MemberDayRow(Base):
    """The pids that joined (or were re-added to) a static audience on one UTC day.

    ``day`` counts days since 0001-01-01 (``date.toordinal()``). A pid sits in one day only,
    its latest; expiry drops whole days, so a ttl costs one bitmap per day, not a row per member.
    """

    __tablename__ = "member_days"

    audience_id: Mapped[str] = mapped_column(
        ForeignKey("audiences.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[int] = mapped_column(Integer, primary_key=True)
    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    bitmap: Mapped[bytes] = mapped_column(LargeBinary)


class MemberWriteRow(Base):
    """One membership write (a JSON call or an import) of a static audience, numbered in order.

    ``seq`` is given when the write is accepted, under the audience's membership lock, so it is
    the order of acceptance. A write applied late is masked by the later writes already applied
    (``pids`` kept until no earlier write is pending), so the last action for an id wins.
    ``body`` holds a JSON write's ids (``services/member_writes.encode``) until it is applied.
    """

    __tablename__ = "member_writes"

    audience_id: Mapped[str] = mapped_column(
        ForeignKey("audiences.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    job_id: Mapped[str] = mapped_column(String(36))
    action: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), default="pending")
    pids: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    body: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    applied_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
