"""Migration 0016 moves each message's body to ``destination_message_bodies`` and back, with
foreign keys on as the app runs (SQLite's table copy would otherwise delete every attempt);
and a body goes with its message."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Integer, String, Text, column, delete, inspect, select, table

from audiences.kit.clock import utcnow
from audiences.store.db import make_engine
from audiences.store.migrate import alembic_config
from audiences.store.tables import (
    DestinationAttemptRow,
    DestinationMessageBodyRow,
    DestinationMessageRow,
    DestinationRow,
    WorkspaceRow,
)
from audiences.store.tables.base import UTCDateTime
from tests.databases import fresh_database

BODIES = {"msg_a": '{"type":"a","data":{}}', "msg_b": "x" * 200_000}
"""Two messages' bodies, one of them past a page (SQLite) and a TOAST threshold (PostgreSQL)."""

BODIES_AT_0016 = table("destination_message_bodies", column("message_id"), column("body", Text))
"""The bodies as 0016 left them, as text (0017 compresses them)."""

OLD_MESSAGES = table(  # destination_messages as 0015 left it, with its body
    "destination_messages",
    column("id", String),
    column("workspace_id", String),
    column("destination_id", String),
    column("seq", Integer),
    column("type", String),
    column("body", Text),
    column("changes", Integer),
    column("status", String),
    column("attempts", Integer),
    column("next_attempt_at", UTCDateTime()),
    column("created_at", UTCDateTime()),
)


def test_bodies_move_to_their_table_and_back_keeping_every_attempt(tmp_path: Path) -> None:
    with _at_0015_with_old_rows(tmp_path) as (config, connection):
        command.upgrade(config, "0016")
        moved = dict(connection.execute(select(BODIES_AT_0016)).all())
        columns = _columns(connection)
        attempts_up = _attempts(connection)
        command.downgrade(config, "0015")
        back = dict(connection.execute(select(OLD_MESSAGES.c.id, OLD_MESSAGES.c.body)).all())
        attempts_down = _attempts(connection)
        nullable = {c["name"]: c["nullable"] for c in _columns(connection)}
        tables = inspect(connection).get_table_names()
    assert moved == BODIES
    assert "body" not in {c["name"] for c in columns}
    assert attempts_up == attempts_down == [("att_a", "msg_a"), ("att_b", "msg_b")]
    assert back == BODIES
    assert nullable["body"] is False
    assert "destination_message_bodies" not in tables


def test_a_body_goes_with_its_message(tmp_path: Path) -> None:
    """Deleting a message (the retention purge, a destination deleted) deletes its body."""
    with _at_0015_with_old_rows(tmp_path) as (config, connection):
        command.upgrade(config, "head")
        connection.execute(delete(DestinationMessageRow).where(DestinationMessageRow.id == "msg_a"))
        after_message = connection.execute(select(DestinationMessageBodyRow.message_id))
        left = sorted(after_message.scalars())
        connection.execute(delete(DestinationRow))
        gone = connection.execute(select(DestinationMessageBodyRow.body)).scalars().all()
    assert left == ["msg_b"]
    assert gone == []


@contextmanager
def _at_0015_with_old_rows(tmp_path: Path) -> Iterator[tuple[Config, Connection]]:
    """A fresh database migrated to 0015 holding :func:`_old_rows`, in one transaction on a
    connection with foreign keys on (as the app's connections have them), and the Alembic
    configuration that migrates it further."""
    config = alembic_config()
    with fresh_database(tmp_path) as url:
        engine = make_engine(url)
        try:
            with engine.begin() as connection:
                config.attributes["connection"] = connection
                command.upgrade(config, "0015")
                _old_rows(connection)
                yield config, connection
        finally:
            engine.dispose()


def _old_rows(connection: Connection) -> None:
    """A workspace, a destination, two messages with bodies and an attempt each, at 0015."""
    now = utcnow()
    connection.execute(WorkspaceRow.__table__.insert().values(id="w", slug="w", name="w"))
    connection.execute(
        DestinationRow.__table__.insert().values(
            id="d", workspace_id="w", name="hook", kind="webhook", url="https://example.com"
        )
    )
    for seq, (message_id, body) in enumerate(BODIES.items(), start=1):
        connection.execute(
            OLD_MESSAGES.insert().values(
                id=message_id,
                workspace_id="w",
                destination_id="d",
                seq=seq,
                type="audience.membership_changed",
                body=body,
                changes=1,
                status="delivered",
                attempts=1,
                next_attempt_at=now,
                created_at=now,
            )
        )
        connection.execute(
            DestinationAttemptRow.__table__.insert().values(
                id=f"att_{message_id[-1]}", message_id=message_id, destination_id="d", status=204
            )
        )


def _columns(connection: Connection) -> list[dict[str, object]]:
    return list(inspect(connection).get_columns("destination_messages"))  # type: ignore[arg-type]


def _attempts(connection: Connection) -> list[tuple[str, str]]:
    attempts = DestinationAttemptRow.__table__
    rows = connection.execute(
        select(attempts.c.id, attempts.c.message_id).order_by(attempts.c.id)
    ).all()
    return [(attempt, message) for attempt, message in rows]
