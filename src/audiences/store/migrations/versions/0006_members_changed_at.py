"""when each audience's members last changed

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import audiences.store.tables.base

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("memberships", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "members_changed_at",
                audiences.store.tables.base.UTCDateTime(timezone=True),
                nullable=True,
            )
        )
    # Before this revision only the last computation was kept: the closest known time of the
    # last change of a membership that ever had a revision.
    op.execute("UPDATE memberships SET members_changed_at = computed_at WHERE revision > 0")


def downgrade() -> None:
    with op.batch_alter_table("memberships", schema=None) as batch_op:
        batch_op.drop_column("members_changed_at")
