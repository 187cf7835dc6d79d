"""Bring the metadata database to the newest schema; run at every start, idempotent.

Several processes may start at once on a new release (servers and workers): on PostgreSQL they
take a transaction-scoped advisory lock first, so one migrates and the others find it done.
SQLite serialises them already (every transaction is ``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

MIGRATION_LOCK = 0x61756469656E6365  # "audience" as a 64-bit advisory lock key


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config pointing at the migrations shipped inside the package."""
    config = Config()
    config.set_main_option("script_location", "audiences.store:migrations")
    if url is not None:
        config.set_main_option("sqlalchemy.url", url)
    return config


def migrate(engine: Engine) -> None:
    """Apply every pending migration on ``engine``."""
    config = alembic_config()
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
