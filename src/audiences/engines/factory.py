"""Opening the profile engine a deployment is configured with (``AUDIENCES_PROFILE_ENGINE``)."""

from __future__ import annotations

import re

from audiences.config import Settings
from audiences.engines.base import ProfileEngine
from audiences.errors import ServiceUnavailable


def open_engine(settings: Settings) -> ProfileEngine:
    """The profile engine ``settings`` name, opened and ready (its files or connections held
    until ``close``); ``engine_unavailable`` when its server cannot be reached."""
    if settings.profile_engine == "duckdb":
        from audiences.engines.duckdb import DuckDBEngine  # the embedded default

        return DuckDBEngine(settings.data_dir, memory_limit=settings.profile_memory_limit)
    if settings.profile_engine == "postgres":
        from audiences.engines.postgres import PostgresEngine

        return PostgresEngine(postgres_url(settings), schema=settings.profile_engine_schema)
    if settings.profile_engine == "clickhouse":
        from audiences.engines.clickhouse import ClickHouseEngine  # the `clickhouse` extra
        from audiences.engines.clickhouse_client import connect

        folder = settings.data_dir / "clickhouse"
        client, database = connect(settings.profile_engine_url or "", folder)
        return ClickHouseEngine(client, database=database)
    raise ValueError(f"unknown profile engine {settings.profile_engine!r}")


def shared(settings: Settings) -> bool:
    """Whether every process can open the configured engine (a server): then ``audiences
    worker`` processes run the jobs that need profile data too. The embedded DuckDB file
    belongs to the server process alone."""
    return settings.profile_engine == "postgres"


def postgres_url(settings: Settings) -> str:
    """The libpq URL of the PostgreSQL engine: its own URL, else the metadata database's when
    that is PostgreSQL (SQLAlchemy's ``postgresql+psycopg://`` read as ``postgresql://``)."""
    url = settings.profile_engine_url or settings.metadata_url
    libpq = re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql://", url)
    if not libpq.startswith("postgresql://"):
        raise ServiceUnavailable(
            "AUDIENCES_PROFILE_ENGINE=postgres needs a PostgreSQL server: set "
            "AUDIENCES_PROFILE_ENGINE_URL, or keep the metadata (AUDIENCES_DATABASE_URL) "
            "in PostgreSQL.",
            code="engine_unavailable",
        )
    return libpq
