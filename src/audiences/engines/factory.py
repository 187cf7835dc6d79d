"""Opening the profile engine a deployment is configured with (``AUDIENCES_PROFILE_ENGINE``)."""

from __future__ import annotations

import re

from audiences.config import Settings
from audiences.engines.base import ProfileEngine
from audiences.engines.coordination import WriteCoordinator
from audiences.errors import ServiceUnavailable


def open_engine(
    settings: Settings, *, coordinator: WriteCoordinator | None = None
) -> ProfileEngine:
    """The profile engine ``settings`` name, opened and ready (its files or connections held
    until ``close``); ``engine_unavailable`` when its server cannot be reached.

    ``coordinator`` lets several processes write a ClickHouse engine (its lock, pids and row
    versions); the other engines coordinate their writers themselves and ignore it."""
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
        return ClickHouseEngine(client, database=database, coordinator=coordinator)
    raise ValueError(f"unknown profile engine {settings.profile_engine!r}")


def shared(settings: Settings) -> bool:
    """Whether every process can open the configured engine (a server): then ``audiences
    worker`` processes run the jobs that need profile data too. The embedded DuckDB file
    and chdb's folder belong to one process; a ClickHouse server is shared when the metadata
    is in PostgreSQL, which coordinates its writers (``store.profile_writes``)."""
    if settings.profile_engine == "clickhouse":
        server = re.match(r"https?://", settings.profile_engine_url or "") is not None
        return server and re.match(r"postgres(ql)?(\+\w+)?://", settings.metadata_url) is not None
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
