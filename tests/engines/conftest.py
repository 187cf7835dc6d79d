"""Fixtures for engine tests: every test of the contract runs on each engine (``kinds.KINDS``),
each on fresh storage (a DuckDB file in the test's folder, a PostgreSQL schema of its own)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from audiences.engines.base import ProfileEngine
from audiences.schemas.attributes import AttributeType
from tests.engines.kinds import KINDS, Store, opened

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


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Fresh storage of each engine kind."""
    with opened(request.param, tmp_path) as made:
        yield made


@pytest.fixture
def engine(store: Store) -> ProfileEngine:
    """An engine on fresh storage, with workspace ``acme`` declaring ``SCHEMA``."""
    engine = store.open()
    engine.ensure_attributes(WS, SCHEMA)
    return engine
