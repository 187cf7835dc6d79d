"""membership deltas for streaming writes

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import audiences.store.tables.base

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "membership_deltas",
        sa.Column("audience_id", sa.String(length=36), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("entered", sa.LargeBinary(), nullable=False),
        sa.Column("exited", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at", audiences.store.tables.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["audience_id"],
            ["audiences.id"],
            name=op.f("fk_membership_deltas_audience_id_audiences"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("audience_id", "revision", name=op.f("pk_membership_deltas")),
    )
    with op.batch_alter_table("memberships", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("base_revision", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("delta_bytes", sa.Integer(), server_default="0", nullable=False)
        )
    # Every existing membership is all base: its bitmap is as of its revision.
    op.execute("UPDATE memberships SET base_revision = revision")


def downgrade() -> None:
    with op.batch_alter_table("memberships", schema=None) as batch_op:
        batch_op.drop_column("delta_bytes")
        batch_op.drop_column("base_revision")
    op.drop_table("membership_deltas")
