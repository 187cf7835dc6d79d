"""Message bodies are kept compressed: any text comes back as written, what is stored is a
Zstandard frame of its UTF-8 bytes (smaller for a real message), and migration 0017 packs the
bodies 0016 left as text and unpacks them again, leaving messages and attempts alone."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, LargeBinary, String, column, inspect, select, table

from audiences.kit.clock import utcnow
from audiences.store.db import make_engine
from audiences.store.migrate import alembic_config, migrate
from audiences.store.tables import (
    DestinationAttemptRow,
    DestinationMessageBodyRow,
    DestinationMessageRow,
    DestinationRow,
    WorkspaceRow,
)
from tests.databases import fresh_database

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

MESSAGE = (
    '{"type":"audience.membership_changed","data":{"audiences":[{"id":"aud_1","changes":['
    + ",".join(f'{{"id":"user-{n}","change":"entered","revision":7}}' for n in range(1_000))
    + "]}]}}"
)
"""A message of 1,000 changes, as a delivery run writes them (about 50 KB)."""

BODIES = {"msg_a": '{"type":"a","data":{"é":"✓ 𝄞"}}', "msg_b": MESSAGE, "msg_c": ""}


def _ids() -> list[str]:
    return [f"msg_{n}" for n in range(5)]


RAW = table("destination_message_bodies", column("message_id", String), column("body"))
"""The bodies' table read with no column type: what the database holds."""


def test_a_message_is_stored_as_a_zstandard_frame_far_smaller(tmp_path: Path) -> None:
    with _migrated(tmp_path) as engine:
        with engine.begin() as connection:
            _messages(connection, {"msg_b": MESSAGE})
            bodies = DestinationMessageBodyRow.__table__
            connection.execute(bodies.insert().values(message_id="msg_b", body=MESSAGE))
        with engine.connect() as connection:
            stored = bytes(connection.execute(select(RAW.c.body)).scalar_one())
            read = connection.execute(select(DestinationMessageBodyRow.body)).scalar_one()
    assert zstd.decompress(stored).decode() == MESSAGE == read
    assert len(stored) < len(MESSAGE.encode()) / 10


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """One migrated database holding a message for each id :func:`_ids` gives, for the
    property below (a database per example took nearly a minute on PostgreSQL)."""
    with _migrated(tmp_path_factory.mktemp("packed")) as engine:
        with engine.begin() as connection:
            _messages(connection, dict.fromkeys(_ids(), ""))
        yield engine


@settings(max_examples=60, deadline=None)
@given(bodies=st.lists(st.text(), min_size=1, max_size=len(_ids())))
def test_any_text_comes_back_as_written(migrated: Engine, bodies: list[str]) -> None:
    written = dict(zip(_ids(), bodies, strict=False))
    stored = DestinationMessageBodyRow.__table__
    with migrated.begin() as connection:
        connection.execute(stored.delete())
        connection.execute(
            stored.insert(), [{"message_id": key, "body": body} for key, body in written.items()]
        )
    with migrated.connect() as connection:
        read = dict(connection.execute(select(stored)).all())
    assert read == written


def test_0017_packs_the_bodies_and_unpacks_them_again(tmp_path: Path) -> None:
    with _at_0016_with_text_bodies(tmp_path) as (config, connection):
        command.upgrade(config, "0017")
        packed = {key: bytes(body) for key, body in connection.execute(select(RAW)).all()}
        read_up = dict(connection.execute(select(DestinationMessageBodyRow.__table__)).all())
        kind_up = _body_type(connection)
        attempts_up = _attempts(connection)
        command.downgrade(config, "0016")
        back = dict(connection.execute(select(RAW)).all())
        kind_down = _body_type(connection)
        attempts_down = _attempts(connection)
        messages = connection.execute(select(DestinationMessageRow.id)).scalars().all()
    assert {key: zstd.decompress(body).decode() for key, body in packed.items()} == BODIES
    assert read_up == BODIES
    assert isinstance(kind_up, LargeBinary)
    assert back == BODIES  # as text again, not bytes
    assert not isinstance(kind_down, LargeBinary)
    assert attempts_up == attempts_down == sorted(f"att_{key}" for key in BODIES)
    assert sorted(messages) == sorted(BODIES)


@contextmanager
def _migrated(folder: Path) -> Iterator[Engine]:
    with fresh_database(folder) as url:
        engine = make_engine(url)
        try:
            migrate(engine)
            yield engine
        finally:
            engine.dispose()


@contextmanager
def _at_0016_with_text_bodies(folder: Path) -> Iterator[tuple[Config, Connection]]:
    """A fresh database at 0016 holding :data:`BODIES` as text with an attempt each, in one
    transaction on a connection with foreign keys on (as the app's connections have them)."""
    config = alembic_config()
    with fresh_database(folder) as url:
        engine = make_engine(url)
        try:
            with engine.begin() as connection:
                config.attributes["connection"] = connection
                command.upgrade(config, "0016")
                _messages(connection, BODIES)
                connection.execute(
                    table(
                        "destination_message_bodies", column("message_id"), column("body")
                    ).insert(),
                    [{"message_id": key, "body": body} for key, body in BODIES.items()],
                )
                connection.execute(
                    DestinationAttemptRow.__table__.insert(),
                    [
                        {"id": f"att_{key}", "message_id": key, "destination_id": "d"}
                        for key in BODIES
                    ],
                )
                yield config, connection
        finally:
            engine.dispose()


def _messages(connection: Connection, bodies: dict[str, str]) -> None:
    """A workspace, a destination and a delivered message for each of ``bodies``' keys."""
    now = utcnow()
    connection.execute(WorkspaceRow.__table__.insert().values(id="w", slug="w", name="w"))
    connection.execute(
        DestinationRow.__table__.insert().values(
            id="d", workspace_id="w", name="hook", kind="webhook", url="https://example.com"
        )
    )
    connection.execute(
        DestinationMessageRow.__table__.insert(),
        [
            {
                "id": key,
                "workspace_id": "w",
                "destination_id": "d",
                "seq": seq,
                "type": "audience.membership_changed",
                "changes": 1,
                "status": "delivered",
                "attempts": 1,
                "next_attempt_at": now,
                "created_at": now,
            }
            for seq, key in enumerate(bodies, start=1)
        ],
    )


def _body_type(connection: Connection) -> object:
    found = inspect(connection).get_columns("destination_message_bodies")  # type: ignore[arg-type]
    return next(entry["type"] for entry in found if entry["name"] == "body")


def _attempts(connection: Connection) -> list[str]:
    attempts = DestinationAttemptRow.__table__
    return sorted(connection.execute(select(attempts.c.id)).scalars())
