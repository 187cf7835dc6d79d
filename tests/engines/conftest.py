"""Fixtures for engine tests: a real DuckDB file in the test's temporary folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from audiences.engines.duckdb import DuckDBEngine
from audiences.schemas.attributes import AttributeType

WS = "acme"

SCHEMA: dict[str, AttributeType] = {
    "country": AttributeType.STRING,
    "age": AttributeType.INTEGER,
    "lifetime_value": AttributeType.FLOAT,
    "churned": AttributeType.BOOLEAN,
    "last_seen": AttributeType.TIMESTAMP,
    "signup_date": AttributeType.DATE,
    "tags": AttributeType.STRING_LIST,
    "scores": AttributeType.NUMBER_LIST,
    "settings": AttributeType.JSON,
}


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[DuckDBEngine]:
    """An engine on a fresh file, with workspace ``acme`` declaring ``SCHEMA``."""
    engine = DuckDBEngine(tmp_path)
    engine.ensure_attributes(WS, SCHEMA)
    yield engine
    engine.close()
