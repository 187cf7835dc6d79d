"""destinations and the membership outbox

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import audiences.store.tables.base

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "destinations",
        sa.Column("workspace_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.Column(
            "disabled_at", audiences.store.tables.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "audience_ids",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("group_id", sa.String(length=36), nullable=True),
        sa.Column("all_audiences", sa.Boolean(), nullable=False),
        sa.Column(
            "attributes",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column(
            "secrets",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("path", sa.Text(), nullable=True),
        sa.Column("format", sa.String(length=16), nullable=True),
        sa.Column("mode", sa.String(length=16), nullable=True),
        sa.Column("interval_seconds", sa.Integer(), nullable=True),
        sa.Column(
            "next_run_at", audiences.store.tables.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "last_delivery_at",
            audiences.store.tables.base.UTCDateTime(timezone=True),
            nullable=True,
        ),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("message_seq", sa.Integer(), server_default="0", nullable=False),
        sa.Column("delivering_job", sa.String(length=36), nullable=True),
        sa.Column(
            "delivering_until",
            audiences.store.tables.base.UTCDateTime(timezone=True),
            nullable=True,
        ),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column(
            "created_at", audiences.store.tables.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "updated_at", audiences.store.tables.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("created_by", sa.String(length=200), nullable=True),
        sa.Column("updated_by", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_destinations_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_destinations")),
        sa.UniqueConstraint("workspace_id", "name", name=op.f("uq_destinations_workspace_id")),
    )
    with op.batch_alter_table("destinations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_destinations_next_run_at"), ["next_run_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_destinations_updated_at"), ["updated_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_destinations_workspace_id"), ["workspace_id"], unique=False
        )

    op.create_table(
        "destination_messages",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("workspace_id", sa.String(length=36), nullable=False),
        sa.Column("destination_id", sa.String(length=36), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("changes", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column(
            "next_attempt_at",
            audiences.store.tables.base.UTCDateTime(timezone=True),
            nullable=False,
        ),
        sa.Column(
            "first_change_at", audiences.store.tables.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "created_at", audiences.store.tables.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "delivered_at", audiences.store.tables.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_response_ms", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["destination_id"],
            ["destinations.id"],
            name=op.f("fk_destination_messages_destination_id_destinations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_destination_messages")),
        sa.UniqueConstraint(
            "destination_id", "seq", name=op.f("uq_destination_messages_destination_id")
        ),
    )
    with op.batch_alter_table("destination_messages", schema=None) as batch_op:
        batch_op.create_index(
            "ix_destination_messages_destination_status",
            ["destination_id", "status", "seq"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_destination_messages_workspace_id"), ["workspace_id"], unique=False
        )

    op.create_table(
        "destination_attempts",
        sa.Column("message_id", sa.String(length=40), nullable=False),
        sa.Column("destination_id", sa.String(length=36), nullable=False),
        sa.Column(
            "attempted_at", audiences.store.tables.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("response_ms", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("response", sa.Text(), nullable=True),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["destination_messages.id"],
            name=op.f("fk_destination_attempts_message_id_destination_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_destination_attempts")),
    )
    with op.batch_alter_table("destination_attempts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_destination_attempts_message_id"), ["message_id"], unique=False
        )

    op.create_table(
        "destination_cursors",
        sa.Column("destination_id", sa.String(length=36), nullable=False),
        sa.Column("audience_id", sa.String(length=36), nullable=False),
        sa.Column("workspace_id", sa.String(length=36), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column(
            "updated_at", audiences.store.tables.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["audience_id"],
            ["audiences.id"],
            name=op.f("fk_destination_cursors_audience_id_audiences"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["destination_id"],
            ["destinations.id"],
            name=op.f("fk_destination_cursors_destination_id_destinations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "destination_id", "audience_id", name=op.f("pk_destination_cursors")
        ),
    )
    with op.batch_alter_table("destination_cursors", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_destination_cursors_audience_id"), ["audience_id"], unique=False
        )

    op.create_table(
        "membership_changes",
        sa.Column("audience_id", sa.String(length=36), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("workspace_id", sa.String(length=36), nullable=False),
        sa.Column("entered", sa.LargeBinary(), nullable=False),
        sa.Column("exited", sa.LargeBinary(), nullable=False),
        sa.Column("cause", sa.String(length=80), nullable=False),
        sa.Column(
            "created_at", audiences.store.tables.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["audience_id"],
            ["audiences.id"],
            name=op.f("fk_membership_changes_audience_id_audiences"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("audience_id", "revision", name=op.f("pk_membership_changes")),
    )
    with op.batch_alter_table("membership_changes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_membership_changes_workspace_id"), ["workspace_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("membership_changes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_membership_changes_workspace_id"))

    op.drop_table("membership_changes")
    with op.batch_alter_table("destination_cursors", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_destination_cursors_audience_id"))

    op.drop_table("destination_cursors")
    with op.batch_alter_table("destination_attempts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_destination_attempts_message_id"))

    op.drop_table("destination_attempts")
    with op.batch_alter_table("destination_messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_destination_messages_workspace_id"))
        batch_op.drop_index("ix_destination_messages_destination_status")

    op.drop_table("destination_messages")
    with op.batch_alter_table("destinations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_destinations_workspace_id"))
        batch_op.drop_index(batch_op.f("ix_destinations_updated_at"))
        batch_op.drop_index(batch_op.f("ix_destinations_next_run_at"))

    op.drop_table("destinations")
