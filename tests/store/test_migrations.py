"""Migrations build exactly the schema the tables declare; running them twice is harmless."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, insert, select

from audiences.store.migrate import alembic_config, migrate
from audiences.store.tables import AudienceRow, Base, WorkspaceRow


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
