"""Jobs: long work (imports, evaluations, exports) as durable, leased rows of a queue."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from audiences.kit.clock import utcnow
from audiences.store.tables.base import Base, IdMixin, JSONType, UTCDateTime


class JobRow(IdMixin, Base):
    """One job: what to run (``handler`` and ``payload``), its state, lease and outcome.

    ``state`` moves ``queued`` → ``running`` → ``succeeded`` | ``failed`` | ``cancelled``, and
    back to ``queued`` for a retry. A running job is leased to ``lease_owner`` until
    ``lease_expires_at``; :mod:`audiences.queue` owns every transition.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("workspace_id", "dedupe_key", name="uq_jobs_workspace_id_dedupe_key"),
        Index("ix_jobs_state_run_after", "state", "run_after"),
        Index("ix_jobs_workspace_id_created_at", "workspace_id", "created_at"),
        Index("ix_jobs_workspace_id_subject_id", "workspace_id", "subject_id"),
        # The live jobs of a workspace by handler and subject, counted from the index alone
        # (the backlog bound of member writes, services.member_writes).
        Index(
            "ix_jobs_workspace_id_state_handler", "workspace_id", "state", "handler", "subject_id"
        ),
    )

    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    handler: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    subject_id: Mapped[str | None] = mapped_column(String(64))
    dedupe_key: Mapped[str | None] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16), default="queued")
    processed: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int | None] = mapped_column(Integer)
    counts: Mapped[dict[str, int]] = mapped_column(JSONType, default=dict)
    result: Mapped[Any] = mapped_column(JSONType, nullable=True)
    errors: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    error_count: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    run_after: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    created_by: Mapped[str | None] = mapped_column(String(200))
