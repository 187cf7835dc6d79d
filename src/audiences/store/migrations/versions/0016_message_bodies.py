"""destination_message_bodies: each message's body moves to a table of its own, so logging
an attempt (an UPDATE of the message's status) no longer rewrites a ~100 KB body on SQLite

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "destination_message_bodies",
        sa.Column("message_id", sa.String(length=40), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["destination_messages.id"],
            name=op.f("fk_destination_message_bodies_message_id_destination_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_destination_message_bodies")),
    )
    op.execute(
        "INSERT INTO destination_message_bodies (message_id, body) "
        "SELECT id, body FROM destination_messages"
    )
    # Not in a batch: SQLite (3.35 on) drops a column in place. A batch would copy the table
    # and drop the old one, and with foreign keys on, dropping a table first deletes its rows,
    # which deletes every attempt and body (ON DELETE CASCADE).
    op.drop_column("destination_messages", "body")


def downgrade() -> None:
    op.add_column("destination_messages", sa.Column("body", sa.Text(), nullable=True))
    op.execute(
        "UPDATE destination_messages SET body = (SELECT b.body FROM destination_message_bodies b "
        "WHERE b.message_id = destination_messages.id)"
    )
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        # SQLite makes a column NOT NULL only by copying the table (a batch), whose drop of
        # the old table deletes every attempt when foreign keys are on: kept aside meanwhile.
        op.execute("CREATE TEMP TABLE kept_attempts AS SELECT * FROM destination_attempts")
        op.execute("DELETE FROM destination_attempts")
    with op.batch_alter_table("destination_messages") as batch:
        batch.alter_column("body", existing_type=sa.Text(), nullable=False)
    if sqlite:
        op.execute("INSERT INTO destination_attempts SELECT * FROM kept_attempts")
        op.execute("DROP TABLE kept_attempts")
    op.drop_table("destination_message_bodies")
