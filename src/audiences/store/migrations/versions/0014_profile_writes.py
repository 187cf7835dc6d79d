"""profile writes shared by several processes: each workspace's pid mark and row version

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "profile_writes",
        sa.Column("workspace_id", sa.String(length=64), nullable=False),
        sa.Column("pid_high", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("workspace_id", name=op.f("pk_profile_writes")),
    )


def downgrade() -> None:
    op.drop_table("profile_writes")
