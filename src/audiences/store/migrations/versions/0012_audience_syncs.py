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


def _type_sources() -> None:
    """External audiences saved before sources had a ``type`` held a label (``name``,
    ``external_id``) or nothing: their members were never pulled, so they are ``push``."""
    table = sa.table(
        "audiences",
        sa.column("id", sa.String),
        sa.column("kind", sa.String),
        sa.column("source", audiences.store.tables.base.JSONType),
    )
    bind = op.get_bind()
    found = bind.execute(sa.select(table.c.id, table.c.source).where(table.c.kind == "external"))
    for audience_id, source in list(found):
        typed: dict[str, Any] = {"type": "push", **(source or {})}
        bind.execute(table.update().where(table.c.id == audience_id).values(source=typed))


def downgrade() -> None:
    with op.batch_alter_table("audience_syncs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audience_syncs_workspace_id"))
    op.drop_table("audience_syncs")
