"""Workspaces: the tenants. Every other row belongs to exactly one."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, false
from sqlalchemy.orm import Mapped, mapped_column

from audiences.kit.clock import utcnow
from audiences.store.tables.base import Base, IdMixin, UTCDateTime


class WorkspaceRow(IdMixin, Base):
    """A tenant, named by a unique slug (``demo``, ``acme-prod``)."""

    __tablename__ = "workspaces"

    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    strict_attributes: Mapped[bool] = mapped_column(default=False, server_default=false())
    """Refuse undeclared attributes instead of inferring them (see ``services.attributes``)."""
    event_retention_days: Mapped[int | None] = mapped_column(default=None)
    """Events older than this many days are dropped (``events.expire`` jobs); None keeps them."""
