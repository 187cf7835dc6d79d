"""attempt_totals: delivery attempts and syncs counted as they are made, never decreased, for
the ``audiences_destination_attempts_total`` and ``audiences_sync_*_total`` counters (counted
from the delivery log and the audiences' sync state, they went down when retention or a
deletion took rows away); started from what those rows count now

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "attempt_totals",
        sa.Column("subject", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("shard", sa.Integer(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "subject", "kind", "outcome", "shard", name=op.f("pk_attempt_totals")
        ),
    )
    op.execute(
        "INSERT INTO attempt_totals (subject, kind, outcome, shard, count) "
        "SELECT 'delivery', d.kind, CASE WHEN a.error IS NULL THEN 'delivered' ELSE 'failed' END, "
        "0, count(*) FROM destination_attempts a JOIN destinations d ON d.id = a.destination_id "
        "GROUP BY 2, 3"
    )
    # A sum in a subquery, filtered outside: HAVING without GROUP BY needs SQLite 3.39.
    for outcome, counted in (("synced", "attempts - failures"), ("failed", "failures")):
        op.execute(
            "INSERT INTO attempt_totals (subject, kind, outcome, shard, count) "
            f"SELECT 'sync', '', '{outcome}', 0, total FROM "
            f"(SELECT sum({counted}) AS total FROM audience_syncs) AS counted WHERE total > 0"
        )


def downgrade() -> None:
    op.drop_table("attempt_totals")
