"""Migrations build exactly the schema the tables declare; running them twice is harmless;
every downgrade undoes its upgrade."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine, insert, inspect, select

from audiences.store.migrate import alembic_config, migrate
from audiences.store.tables import (
    AttemptTotalRow,
    AudienceRow,
    AudienceSyncRow,
    Base,
    DestinationAttemptRow,
    DestinationMessageRow,
    DestinationRow,
    WorkspaceRow,
)
from tests.databases import fresh_database


def test_migrated_database_matches_the_tables(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        migrate(engine)
        migrate(engine)
        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_concurrent_starts_migrate_once(database_url: str) -> None:
    """Four processes starting at once on one database (servers and workers on a release)."""
    script = (
        "import sys; from audiences.store.db import make_engine; "
        "from audiences.store.migrate import migrate; migrate(make_engine(sys.argv[1]))"
    )
    starts = [
        subprocess.Popen(
            [sys.executable, "-c", script, database_url], stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    outcomes = [(p.wait(timeout=120), p.communicate()[1]) for p in starts]
    assert [error for code, error in outcomes if code != 0] == []


def test_every_downgrade_undoes_its_upgrade(tmp_path: Path) -> None:
    """On a database of its own: up one revision at a time from nothing to head, down one at
    a time to nothing, and up to head again. Each revision's schema on the way down equals
    its schema on the way up, and the final schema equals that of the plain upgrade."""
    config = alembic_config()
    revisions = [script.revision for script in ScriptDirectory.from_config(config).walk_revisions()]
    revisions.reverse()
    with fresh_database(tmp_path) as url:
        engine = create_engine(url)
        try:
            with engine.begin() as connection:
                config.attributes["connection"] = connection
                empty = _schema(connection)
                upward: dict[str, dict[str, Any]] = {}
                for revision in revisions:
                    command.upgrade(config, revision)
                    upward[revision] = _schema(connection)
                downward: dict[str, dict[str, Any]] = {}
                for revision in reversed(revisions[:-1]):
                    command.downgrade(config, revision)
                    downward[revision] = _schema(connection)
                command.downgrade(config, "base")
                emptied = _schema(connection)
                command.upgrade(config, "head")
                again = _schema(connection)
        finally:
            engine.dispose()
    assert emptied == empty
    for revision, schema in downward.items():
        assert schema == upward[revision], f"downgrading to {revision}"
    assert again == upward[revisions[-1]]
    assert again["tables"]


def _schema(connection: Connection) -> dict[str, Any]:
    """What the database's own catalogue says: every table's columns (by name; a downgrade
    may add a column back at the end), keys, indexes and constraints, and the sequences and
    (on PostgreSQL) enum types a migration could leave behind."""
    inspector = inspect(connection)
    dialect = connection.dialect
    tables: dict[str, Any] = {}
    for table in inspector.get_table_names():
        if table == "alembic_version":
            continue
        tables[table] = {
            "columns": {
                column["name"]: (
                    column["type"].compile(dialect=dialect),
                    column["nullable"],
                    column["default"],
                )
                for column in inspector.get_columns(table)
            },
            "primary_key": inspector.get_pk_constraint(table),
            "foreign_keys": _sorted(inspector.get_foreign_keys(table)),
            "indexes": _sorted(inspector.get_indexes(table)),
            "unique": _sorted(inspector.get_unique_constraints(table)),
            "checks": _sorted(inspector.get_check_constraints(table)),
        }
    schema: dict[str, Any] = {"tables": tables, "views": sorted(inspector.get_view_names())}
    if connection.dialect.name == "postgresql":
        schema["sequences"] = sorted(inspector.get_sequence_names())
        schema["enums"] = _sorted(inspector.get_enums())  # type: ignore[attr-defined]
    return schema


def _sorted(items: list[Any]) -> list[Any]:
    return sorted(items, key=repr)


def test_external_sources_saved_before_types_become_push_sources(tmp_path: Path) -> None:
    """0012 types the sources stored before it: a label or nothing was never pulled."""
    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    config = alembic_config()
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0010")
            connection.execute(insert(WorkspaceRow.__table__).values(id="w", slug="w", name="w"))
            rows = [
                {"id": "labelled", "kind": "external", "source": {"name": "crm"}},
                {"id": "bare", "kind": "external", "source": None},
                {"id": "rule", "kind": "dynamic", "source": None, "rule": "age > 1"},
                {"id": "rich", "kind": "external", "source": RICH, "metadata": {"a": 1}},
            ]
            for row in rows:
                values = {"workspace_id": "w", "key": row["id"], "name": "n", **row}
                connection.execute(insert(AudienceRow.__table__).values(**values))
            command.upgrade(config, "0012")
            found = dict(connection.execute(select(AudienceRow.id, AudienceRow.source)).all())
            kept = connection.execute(
                select(AudienceRow.extra_metadata).where(AudienceRow.id == "rich")
            ).scalar_one()
            command.downgrade(config, "0010")
            back = dict(connection.execute(select(AudienceRow.id, AudienceRow.source)).all())
            restored = connection.execute(
                select(AudienceRow.extra_metadata).where(AudienceRow.id == "rich")
            ).scalar_one()
    finally:
        engine.dispose()
    assert found == {
        "labelled": {"type": "push", "name": "crm"},
        "bare": {"type": "push"},
        "rule": None,
        "rich": {"type": "push", "name": "crm", "external_id": "list-9"},
    }
    assert kept == {"a": 1, "legacy_source": RICH}
    assert back == {"labelled": {"name": "crm"}, "bare": None, "rule": None, "rich": RICH}
    assert restored == {"a": 1}


RICH = {"name": "crm", "external_id": "list-9", "type": "salesforce", "segment": "vip"}
"""A source saved before types with more than a label: its own ``type``, another key."""


def test_attempt_totals_start_from_the_attempts_logged(tmp_path: Path) -> None:
    """0018 counts the attempts already in the delivery log, by destination kind and whether
    each delivered (no error), and the syncs the audiences' sync states count, so the
    counters go on from there."""
    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    config = alembic_config()
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0017")
            connection.execute(insert(WorkspaceRow.__table__).values(id="w", slug="w", name="w"))
            for ident, kind in (("hook", "webhook"), ("files", "file")):
                connection.execute(
                    insert(DestinationRow.__table__).values(
                        id=ident, workspace_id="w", name=ident, kind=kind, all_audiences=True
                    )
                )
                connection.execute(
                    insert(DestinationMessageRow.__table__).values(
                        id=f"msg_{ident}", workspace_id="w", destination_id=ident, seq=1,
                        type="t", changes=0, status="pending", attempts=0,
                    )
                )  # fmt: skip
            attempts = [("hook", None), ("hook", "timed out"), ("hook", None), ("files", None)]
            for ident, error in attempts:
                connection.execute(
                    insert(DestinationAttemptRow.__table__).values(
                        message_id=f"msg_{ident}", destination_id=ident, error=error
                    )
                )
            for ident, attempts, failures in (("a1", 4, 1), ("a2", 1, 1)):
                connection.execute(
                    insert(AudienceRow.__table__).values(
                        id=ident, workspace_id="w", key=ident, name="n", kind="external"
                    )
                )
                connection.execute(
                    insert(AudienceSyncRow.__table__).values(
                        audience_id=ident, workspace_id="w", status="synced",
                        attempts=attempts, failures=failures,
                    )
                )  # fmt: skip
            command.upgrade(config, "0018")
            totals = set(
                connection.execute(
                    select(
                        AttemptTotalRow.subject,
                        AttemptTotalRow.kind,
                        AttemptTotalRow.outcome,
                        AttemptTotalRow.count,
                    )
                )
            )
            command.downgrade(config, "0017")
            left = inspect(connection).has_table("attempt_totals")
    finally:
        engine.dispose()
    assert totals == {
        ("delivery", "webhook", "delivered", 2),
        ("delivery", "webhook", "failed", 1),
        ("delivery", "file", "delivered", 1),
        ("sync", "", "synced", 3),
        ("sync", "", "failed", 2),
    }
    assert not left
