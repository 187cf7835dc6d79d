"""static members by day and membership writes

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import audiences.store.tables.base

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "member_days",
        sa.Column("audience_id", sa.String(length=36), nullable=False),
        sa.Column("day", sa.Integer(), nullable=False),
        sa.Column("workspace_id", sa.String(length=36), nullable=False),
        sa.Column("bitmap", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["audience_id"],
            ["audiences.id"],
            name=op.f("fk_member_days_audience_id_audiences"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_member_days_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("audience_id", "day", name=op.f("pk_member_days")),
    )
    with op.batch_alter_table("member_days", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_member_days_workspace_id"), ["workspace_id"], unique=False
        )
    op.create_table(
        "member_writes",
        sa.Column("audience_id", sa.String(length=36), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("workspace_id", sa.String(length=36), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("pids", sa.LargeBinary(), nullable=True),
        sa.Column(
            "created_at", audiences.store.tables.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "applied_at", audiences.store.tables.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.ForeignKeyConstraint(
            ["audience_id"],
            ["audiences.id"],
            name=op.f("fk_member_writes_audience_id_audiences"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_member_writes_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("audience_id", "seq", name=op.f("pk_member_writes")),
    )
    with op.batch_alter_table("member_writes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_member_writes_workspace_id"), ["workspace_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("member_writes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_member_writes_workspace_id"))
    op.drop_table("member_writes")
    with op.batch_alter_table("member_days", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_member_days_workspace_id"))
    op.drop_table("member_days")
