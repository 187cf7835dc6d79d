"""destination_messages: an index on (status, created_at), so the housekeeping's two sweeps
across workspaces (a test message left ``sending``, finished messages past retention) read
the rows they change from the index instead of scanning every message

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_destination_messages_status_created",
        "destination_messages",
        ["status", "created_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_destination_messages_status_created", table_name="destination_messages")
