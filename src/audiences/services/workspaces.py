"""Workspaces: created on demand by slug (the CLI and the demo seed use this), and settings."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from audiences.errors import ValidationFailed
from audiences.schemas.workspaces import WorkspaceSettings, WorkspaceSettingsUpdate
from audiences.services.callers import Caller
from audiences.store.tables import WorkspaceRow

SLUG_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_")


def ensure(session: Session, *, slug: str, name: str | None = None) -> WorkspaceRow:
    """The workspace with this slug, created if it does not exist yet."""
    if not slug or len(slug) > 64 or not set(slug) <= SLUG_CHARS:
        raise ValidationFailed(
            "a workspace slug is 1-64 characters of lowercase letters, digits, '-' and '_'",
            code="invalid_workspace_slug",
        )
    found = session.scalars(select(WorkspaceRow).where(WorkspaceRow.slug == slug)).one_or_none()
    if found is not None:
        return found
    row = WorkspaceRow(slug=slug, name=name or slug)
    session.add(row)
    session.flush()
    return row


def settings(session: Session, *, caller: Caller) -> WorkspaceSettings:
    """The caller's workspace settings."""
    return _settings(session.get_one(WorkspaceRow, caller.workspace_id))


def update_settings(
    session: Session, *, caller: Caller, data: WorkspaceSettingsUpdate
) -> WorkspaceSettings:
    """Replace the caller's workspace settings.

    Turning ``strict_attributes`` on or off changes only what later writes may send: stored
    profiles and attributes (inferred ones too) stay as they are. A shorter
    ``event_retention_days`` drops older events at the next hourly ``events.expire`` job.
    """
    row = session.get_one(WorkspaceRow, caller.workspace_id)
    row.strict_attributes = data.strict_attributes
    row.event_retention_days = data.event_retention_days
    session.flush()
    return _settings(row)


def _settings(row: WorkspaceRow) -> WorkspaceSettings:
    return WorkspaceSettings(
        strict_attributes=row.strict_attributes, event_retention_days=row.event_retention_days
    )
