"""External audiences' syncs: how the latest one stands, and how many ran and failed."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from audiences.kit.clock import utcnow
from audiences.store.tables.base import Base, UTCDateTime


class AudienceSyncRow(Base):
    """One external audience's sync state, written with the members a sync replaces.

    ``status`` is how the latest sync stands as its writers left it: ``syncing`` from the moment
    its job is queued, ``synced`` or ``failed`` when it ends. A job that dies for good without
    ending it (its attempts spent) leaves ``syncing``; readers then report it failed, from the
    job (``services/syncs.state``). ``attempts`` and ``failures`` only grow (the metrics count
    in ``attempt_totals``, which outlive the audience).
    """

    __tablename__ = "audience_syncs"

    audience_id: Mapped[str] = mapped_column(
        ForeignKey("audiences.id", ondelete="CASCADE"), primary_key=True
    )
    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(String(16), default="pending")
    job_id: Mapped[str | None] = mapped_column(String(36))
    last_synced_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_code: Mapped[str | None] = mapped_column(String(64))
    last_run_id: Mapped[str | None] = mapped_column(String(36))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
