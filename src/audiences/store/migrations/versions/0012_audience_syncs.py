"""external audiences with members: their sync state, and every stored source typed

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

import audiences.store.tables.base

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audience_syncs",
        sa.Column("audience_id", sa.String(length=36), nullable=False),
        sa.Column("workspace_id", sa.String(length=36), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=True),
        sa.Column(
            "last_synced_at", audiences.store.tables.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "last_attempt_at", audiences.store.tables.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_code", sa.String(length=64), nullable=True),
        sa.Column("last_run_id", sa.String(length=36), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column(
            "updated_at", audiences.store.tables.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["audience_id"],
            ["audiences.id"],
            name=op.f("fk_audience_syncs_audience_id_audiences"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_audience_syncs_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("audience_id", name=op.f("pk_audience_syncs")),
    )
    with op.batch_alter_table("audience_syncs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_audience_syncs_workspace_id"), ["workspace_id"], unique=False
        )
    _type_sources()


LEGACY_KEY = "legacy_source"
"""The metadata key that keeps a source stored before types when it held more than a label."""
LABELS = {"name": 100, "external_id": 255}
"""The label a push source keeps, with the longest value each may be."""


def _audiences() -> sa.TableClause:
    return sa.table(
        "audiences",
        sa.column("id", sa.String),
        sa.column("kind", sa.String),
        sa.column("source", audiences.store.tables.base.JSONType),
        sa.column("metadata", audiences.store.tables.base.JSONType),
    )


def _type_sources() -> None:
    """External audiences saved before sources had a ``type`` held a label (``name``,
    ``external_id``) or nothing: their members were never pulled, so they are ``push``. A
    source that held anything else (other keys, a ``type`` of its own, a label too long) keeps
    its label where it fits and the whole old source in ``metadata.legacy_source``, so nothing
    the client saved is lost and the downgrade puts it back."""
    table = _audiences()
    bind = op.get_bind()
    stmt = sa.select(table.c.id, table.c.source, table.c.metadata)
    for audience_id, source, metadata in list(bind.execute(stmt.where(table.c.kind == "external"))):
        old: dict[str, Any] = source if isinstance(source, dict) else {}
        typed: dict[str, Any] = {"type": "push"}
        for key, longest in LABELS.items():
            value = old.get(key)
            if isinstance(value, str) and 0 < len(value) <= longest:
                typed[key] = value
        values: dict[str, Any] = {"source": typed}
        if {k: v for k, v in old.items() if k in typed} != old:
            values["metadata"] = {**(metadata or {}), LEGACY_KEY: old}
        bind.execute(table.update().where(table.c.id == audience_id).values(**values))


def _untype_sources() -> None:
    """The downgrade of :func:`_type_sources`: a push source back to its label alone, or to
    the old source kept in ``metadata.legacy_source``."""
    table = _audiences()
    bind = op.get_bind()
    stmt = sa.select(table.c.id, table.c.source, table.c.metadata)
    for audience_id, source, metadata in list(bind.execute(stmt.where(table.c.kind == "external"))):
        if not isinstance(source, dict) or source.get("type") != "push":
            continue
        kept = dict(metadata or {})
        old = kept.pop(LEGACY_KEY, None)
        if not isinstance(old, dict):
            old = {key: value for key, value in source.items() if key != "type"}
        values = {"source": old or None, "metadata": kept}
        bind.execute(table.update().where(table.c.id == audience_id).values(**values))


def downgrade() -> None:
    _untype_sources()
    with op.batch_alter_table("audience_syncs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audience_syncs_workspace_id"))
    op.drop_table("audience_syncs")
