"""delivery_attempt_totals: delivery attempts counted as they are logged, never decreased, for
the ``audiences_destination_attempts_total`` counter (counted from the delivery log, it went
down when retention or a deleted destination took attempts away); started from the attempts
logged now

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
        "delivery_attempt_totals",
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("shard", sa.Integer(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "kind", "outcome", "shard", name=op.f("pk_delivery_attempt_totals")
        ),
    )
    op.execute(
        "INSERT INTO delivery_attempt_totals (kind, outcome, shard, count) "
        "SELECT d.kind, CASE WHEN a.error IS NULL THEN 'delivered' ELSE 'failed' END, 0, "
        "count(*) FROM destination_attempts a JOIN destinations d ON d.id = a.destination_id "
        "GROUP BY 1, 2"
    )


def downgrade() -> None:
    op.drop_table("delivery_attempt_totals")
