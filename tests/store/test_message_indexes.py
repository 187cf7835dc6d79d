"""The housekeeping's sweeps of the delivery log read the messages they change through an
index led by ``status`` (migration 0015), not by scanning every workspace's messages: the
statements :mod:`audiences.services.maintenance` sends, as sent, are explained on the
migrated database (SQLite, or PostgreSQL under ``-m database``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.orm import Session

from audiences.config import Settings
from audiences.services import maintenance
from audiences.store.migrate import migrate
from tests.databases import fresh_database

INDEX = "ix_destination_messages_status_created"
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
Sweep = Callable[[Session], object]
SWEEPS: dict[str, Sweep] = {
    "fail_interrupted": lambda s: maintenance.fail_interrupted(s, settings=Settings(), now=NOW),
    "purge": lambda s: maintenance.purge_delivery_log(s, retention_days=30, now=NOW),
    "purge_in_batches": lambda s: maintenance.purge_delivery_log(
        s, retention_days=30, now=NOW, limit=500
    ),
}


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """A migrated metadata database of this module's own."""
    with fresh_database(tmp_path_factory.mktemp("indexes")) as url:
        made = create_engine(url)
        migrate(made)
        yield made
        made.dispose()


def _sent(engine: Engine, sweep: Sweep) -> list[tuple[str, Any]]:
    """The statements ``sweep`` sends with their parameters (its changes rolled back)."""
    sent: list[tuple[str, Any]] = []

    def record(_c: Connection, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append((statement, parameters))

    with engine.connect() as connection:
        event.listen(connection, "before_cursor_execute", record)
        with Session(connection) as session:
            sweep(session)
        connection.rollback()
    return [(s, p) for s, p in sent if "destination_messages" in s]


def _plan(engine: Engine, statement: str, parameters: Any) -> str:
    """The plan the database makes for ``statement``, one line per node."""
    with engine.connect() as connection:
        cursor = connection.connection.cursor()
        if engine.dialect.name == "sqlite":
            cursor.execute(f"EXPLAIN QUERY PLAN {statement}", parameters)
            lines = [str(row[-1]) for row in cursor.fetchall()]
        else:
            # On an empty table any plan is cheap; without sequential scans the planner
            # shows which index it can use for the conditions.
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute(f"EXPLAIN {statement}", parameters)
            lines = [str(row[0]) for row in cursor.fetchall()]
        connection.rollback()
    return "\n".join(lines)


@pytest.mark.parametrize("name", SWEEPS)
def test_each_sweep_reads_the_messages_through_the_status_index(engine: Engine, name: str) -> None:
    statements = _sent(engine, SWEEPS[name])
    assert statements, "the sweep sent no statement on destination_messages"
    for statement, parameters in statements:
        plan = _plan(engine, statement, parameters)
        assert INDEX in plan, plan
        assert "SCAN destination_messages\n" not in plan + "\n", plan  # SQLite's full scan
        assert "Seq Scan on destination_messages" not in plan, plan
