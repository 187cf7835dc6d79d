"""jobs: an index on (workspace_id, state, handler, subject_id), so a member write counts the
live writes waiting before it from the index alone instead of every job the workspace ever ran

Revision ID: 0010_live_jobs_index
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_jobs_workspace_id_state_handler",
        "jobs",
        ["workspace_id", "state", "handler", "subject_id"],
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_workspace_id_state_handler", table_name="jobs")
