"""Migrations build exactly the schema the tables declare; running them twice is harmless."""

from __future__ import annotations

import subprocess
import sys

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from audiences.store.migrate import migrate
from audiences.store.tables import Base


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
