"""destination_message_bodies.body: kept Zstandard-compressed (binary) instead of as text; a
webhook message's ~100 KB body packs to a few KB, so a delivery run no longer writes each
body twice through SQLite's WAL at full size

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

BATCH = 500
"""Bodies rewritten a statement: at ~100 KB each, about 50 MB of text in memory at once."""

BODIES = sa.table(
    "destination_message_bodies",
    sa.column("message_id", sa.String),
    sa.column("body", sa.LargeBinary),
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE destination_message_bodies "
            "ALTER COLUMN body TYPE bytea USING convert_to(body, 'UTF8')"
        )
    else:
        # The table copy is safe here: no table refers to the bodies, so with foreign keys on
        # the drop of the old table deletes nothing else.
        with op.batch_alter_table("destination_message_bodies") as batch:
            batch.alter_column("body", existing_type=sa.Text(), type_=sa.LargeBinary())
    _rewrite(lambda stored: zstd.compress(_utf8(stored)))


def downgrade() -> None:
    _rewrite(zstd.decompress)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE destination_message_bodies "
            "ALTER COLUMN body TYPE text USING convert_from(body, 'UTF8')"
        )
    else:
        # The copy casts each value to the new column's type: the UTF-8 bytes become text.
        with op.batch_alter_table("destination_message_bodies") as batch:
            batch.alter_column("body", existing_type=sa.LargeBinary(), type_=sa.Text())


def _rewrite(change: Callable[[bytes], bytes]) -> None:
    """Every body through ``change``, ``BATCH`` at a time in ``message_id`` order."""
    connection = op.get_bind()
    after = ""
    while True:
        rows = connection.execute(
            sa.select(BODIES.c.message_id, BODIES.c.body)
            .where(BODIES.c.message_id > after)
            .order_by(BODIES.c.message_id)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        connection.execute(
            BODIES.update()
            .where(BODIES.c.message_id == sa.bindparam("id"))
            .values(body=sa.bindparam("packed")),
            [{"id": message_id, "packed": change(_utf8(body))} for message_id, body in rows],
        )
        after = rows[-1][0]


def _utf8(stored: bytes | str) -> bytes:
    """A body as bytes: SQLite hands back text written before the column became binary."""
    return stored.encode() if isinstance(stored, str) else bytes(stored)
