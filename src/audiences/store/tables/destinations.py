"""Destinations: where membership changes go, what each has been sent, and every attempt."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from audiences.kit.clock import utcnow
from audiences.store.tables.base import (
    Base,
    IdMixin,
    JSONType,
    PackedText,
    TimestampsMixin,
    UTCDateTime,
)


class DestinationRow(IdMixin, TimestampsMixin, Base):
    """A webhook endpoint or a file directory subscribed to audiences; ``version`` is the ETag.

    The subscription is ``audience_ids`` (a list), ``group_id`` or ``all_audiences``. Webhook
    ``secrets`` are ``[{"secret": "whsec_…", "created_at": …, "expires_at": … | None}]``, newest
    first: every unexpired one signs each request (rotation). ``delivering_job`` and
    ``delivering_until`` lease the destination to one delivery job at a time, so messages go
    out in order.
    """

    __tablename__ = "destinations"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)

    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(16))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    audience_ids: Mapped[list[str] | None] = mapped_column(JSONType)
    group_id: Mapped[str | None] = mapped_column(String(36))
    all_audiences: Mapped[bool] = mapped_column(Boolean, default=False)
    attributes: Mapped[list[str]] = mapped_column(JSONType, default=list)
    url: Mapped[str | None] = mapped_column(Text)
    secrets: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    path: Mapped[str | None] = mapped_column(Text)
    format: Mapped[str | None] = mapped_column(String(16))
    mode: Mapped[str | None] = mapped_column(String(16))
    interval_seconds: Mapped[int | None] = mapped_column(Integer)
    next_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    last_delivery_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    message_seq: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """The ``seq`` of the destination's last message (bumped by a plain UPDATE, not a version)."""
    delivering_job: Mapped[str | None] = mapped_column(String(36))
    delivering_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


class DestinationCursorRow(Base):
    """How far a destination has taken one audience's changes: the membership revision its
    messages cover up to, and ``position``, how many of the next revision's changes (entered,
    then exited, in pid order) they cover already (a large revision is made into messages a
    few at a time). No row: its next delivery starts with the full membership."""

    __tablename__ = "destination_cursors"

    destination_id: Mapped[str] = mapped_column(
        ForeignKey("destinations.id", ondelete="CASCADE"), primary_key=True
    )
    audience_id: Mapped[str] = mapped_column(
        ForeignKey("audiences.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    workspace_id: Mapped[str] = mapped_column(String(36))
    revision: Mapped[int] = mapped_column(Integer)
    position: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class DestinationMessageRow(Base):
    """One message to a destination: where it stands and the outcome of its last attempt;
    its body is a :class:`DestinationMessageBodyRow`. ``id`` is the ``webhook-id``; ``seq``
    orders a destination's messages (sent in that order)."""

    __tablename__ = "destination_messages"
    __table_args__ = (
        UniqueConstraint("destination_id", "seq"),
        Index("ix_destination_messages_destination_status", "destination_id", "status", "seq"),
        # The housekeeping's sweeps across workspaces: a status, then a time (``created_at <``)
        # (maintenance.fail_interrupted, maintenance.purge_delivery_log); migration 0015.
        Index("ix_destination_messages_status_created", "status", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(String(36), index=True)
    destination_id: Mapped[str] = mapped_column(ForeignKey("destinations.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(64))
    changes: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    first_change_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_response_ms: Mapped[int | None] = mapped_column(Integer)


class DestinationMessageBodyRow(Base):
    """A message's body, sent as is on every attempt, in a table of its own (migration 0016):
    SQLite rewrites a whole row on UPDATE, so a ~100 KB body beside the message's status was
    written again each time an attempt was logged (``bench/README.md``, deliveries). Written
    in the message's transaction; deleted with it (``ON DELETE CASCADE``). Kept compressed
    (:class:`~audiences.store.tables.base.PackedText`, migration 0017)."""

    __tablename__ = "destination_message_bodies"

    message_id: Mapped[str] = mapped_column(
        ForeignKey("destination_messages.id", ondelete="CASCADE"), primary_key=True
    )
    body: Mapped[str] = mapped_column(PackedText())


class DestinationAttemptRow(IdMixin, Base):
    """One attempt to deliver a message: when, the answer's status, how long it took, what
    went wrong, and the start of the answer's body."""

    __tablename__ = "destination_attempts"

    message_id: Mapped[str] = mapped_column(
        ForeignKey("destination_messages.id", ondelete="CASCADE"), index=True
    )
    destination_id: Mapped[str] = mapped_column(String(36))
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    status: Mapped[int | None] = mapped_column(Integer)
    response_ms: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    response: Mapped[str | None] = mapped_column(Text)
