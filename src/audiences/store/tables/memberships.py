"""Membership: each audience's current member set, and the runs that computed it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from audiences.kit.clock import utcnow
from audiences.store.tables.base import Base, IdMixin, UTCDateTime


class MembershipRow(Base):
    """An audience's evaluation state: its current members, as of when, and how the last run went.

    Kept apart from the audience's definition, so that evaluations and streaming writes never
    change the definition's version (its ETag). ``revision`` grows with every change of the
    member set; caches key on it, so a reader never sees a set older than one it could observe.

    The members are ``bitmap`` (the base, as of ``base_revision``) with the
    :class:`MembershipDeltaRow` of each later revision applied in order; ``delta_bytes`` is
    what those deltas weigh, so a writer knows when to fold them into the base.
    """

    __tablename__ = "memberships"

    audience_id: Mapped[str] = mapped_column(
        ForeignKey("audiences.id", ondelete="CASCADE"), primary_key=True
    )
    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    bitmap: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    size: Mapped[int | None] = mapped_column(Integer)
    revision: Mapped[int] = mapped_column(Integer, default=0)
    base_revision: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    delta_bytes: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    computed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    members_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    """When a revision last added or removed a member (a run that changes nothing leaves it)."""
    status: Mapped[str | None] = mapped_column(String(16))
    last_error: Mapped[str | None] = mapped_column(Text)
    last_run_id: Mapped[str | None] = mapped_column(String(36))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class MembershipDeltaRow(Base):
    """One streaming change of an audience's members: who entered and who exited at a revision.

    Appending a small row instead of rewriting the whole member set keeps a streaming write's
    cost proportional to its change. Deltas exist only above the base's revision; folding
    (or replacing the members) writes a new base and deletes them.
    """

    __tablename__ = "membership_deltas"

    audience_id: Mapped[str] = mapped_column(
        ForeignKey("audiences.id", ondelete="CASCADE"), primary_key=True
    )
    revision: Mapped[int] = mapped_column(Integer, primary_key=True)
    entered: Mapped[bytes] = mapped_column(LargeBinary)
    exited: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class MembershipChangeRow(Base):
    """The outbox: one revision of an audience's members (who entered, who exited, and what
    caused it), written in the transaction of the change itself while a destination subscribes
    to the audience. Delivery reads it after each destination's cursor and deletes what every
    cursor has passed, so a change is neither lost nor invented by a crash on either side."""

    __tablename__ = "membership_changes"

    audience_id: Mapped[str] = mapped_column(
        ForeignKey("audiences.id", ondelete="CASCADE"), primary_key=True
    )
    revision: Mapped[int] = mapped_column(Integer, primary_key=True)
    workspace_id: Mapped[str] = mapped_column(String(36), index=True)
    entered: Mapped[bytes] = mapped_column(LargeBinary)
    exited: Mapped[bytes] = mapped_column(LargeBinary)
    cause: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class RunRow(IdMixin, Base):
    """One evaluation of one audience: when, why, how it went, who entered and who exited.

    ``members`` keeps the member set as of the run, so a client can read the membership as of a
    past run and page through the changes since it; old runs lose it to retention.
    """

    __tablename__ = "evaluation_runs"
    __table_args__ = (
        UniqueConstraint("audience_id", "number"),
        Index("ix_evaluation_runs_audience_started", "audience_id", "started_at"),
    )

    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    audience_id: Mapped[str] = mapped_column(ForeignKey("audiences.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    trigger: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    rule: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    size: Mapped[int | None] = mapped_column(Integer)
    entered: Mapped[int | None] = mapped_column(Integer)
    exited: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    members: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    members_kept: Mapped[bool] = mapped_column(default=False)
