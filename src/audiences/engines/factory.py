"""Opening the profile engine a deployment is configured with (``AUDIENCES_PROFILE_ENGINE``)."""

from __future__ import annotations

from audiences.config import Settings
from audiences.engines.base import ProfileEngine


def open_engine(settings: Settings) -> ProfileEngine:
    """The profile engine ``settings`` name, opened and ready (its files or connections held
    until ``close``)."""
    if settings.profile_engine == "duckdb":
        from audiences.engines.duckdb import DuckDBEngine  # the embedded default

        return DuckDBEngine(settings.data_dir, memory_limit=settings.profile_memory_limit)
    if settings.profile_engine == "clickhouse":
        from audiences.engines.clickhouse import ClickHouseEngine  # the `clickhouse` extra
        from audiences.engines.clickhouse_client import connect

        client, database = connect(settings.profile_engine_url, settings.data_dir / "clickhouse")
        return ClickHouseEngine(client, database=database)
    raise ValueError(f"unknown profile engine {settings.profile_engine!r}")
