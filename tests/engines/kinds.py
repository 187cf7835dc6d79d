"""The profile engines the shared engine suite runs on, each opened on fresh storage.

``KINDS`` names every engine; :func:`opened` makes an empty store of a kind (DuckDB: a folder;
PostgreSQL: a schema of its own on ``AUDIENCES_TEST_POSTGRES_URL``; ClickHouse: a database of
its own in the process's chdb folder; the last two dropped afterwards) and
hands back a :class:`Store` whose ``open()`` opens an engine on it, as often as a test wants
(some reopen to check what survives). A kind whose server is unreachable is skipped, except
in CI, where it fails.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from audiences.engines.base import ProfileEngine

KINDS = ("duckdb", "postgres", "clickhouse")
"""Every profile engine; the ``engine`` fixture runs each test on each."""

POSTGRES_URL = os.environ.get(
    "AUDIENCES_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)

EXTRA_TEXT = {
    "duckdb": "extra->>'$.{name}'",
    "postgres": "extra->>'{name}'",
    "clickhouse": (
        "if(JSONExtractRaw(extra, '{name}') = '', NULL, JSONExtractString(extra, '{name}'))"
    ),
}
"""How each engine's SQL reads an undeclared attribute (in ``extra``) as text."""


@dataclass
class Store:
    """Fresh storage of one engine kind; ``open()`` opens an engine on it (closed at the end)."""

    kind: str
    factory: Callable[[], ProfileEngine]
    settings: dict[str, Any] = field(default_factory=dict)
    """``Settings`` fields that make ``engines.factory.open_engine`` open this storage (beside
    a ``data_dir``): what service tests build their app with."""
    engines: list[ProfileEngine] = field(default_factory=list)

    def open(self) -> ProfileEngine:
        """A new engine on this storage, closed when the test ends (closing twice is fine)."""
        engine = self.factory()
        self.engines.append(engine)
        return engine

    def extra_text(self, name: str) -> str:
        """SQL reading the undeclared attribute ``name`` as text."""
        return EXTRA_TEXT[self.kind].format(name=name)


@contextmanager
def opened(kind: str, tmp_path: Path) -> Iterator[Store]:
    """Fresh storage of ``kind``, its engines closed and its storage dropped afterwards."""
    with OPENERS[kind](tmp_path) as (factory, settings):
        store = Store(kind, factory, settings)
        try:
            yield store
        finally:
            for engine in store.engines:
                engine.close()


Opener = Iterator[tuple[Callable[[], ProfileEngine], dict[str, Any]]]
"""What an opener yields: the engine factory and the matching ``Settings`` fields."""


@contextmanager
def _duckdb(tmp_path: Path) -> Opener:
    from audiences.engines.duckdb import DuckDBEngine

    folder = tmp_path / "duckdb"
    yield (lambda: DuckDBEngine(folder)), {"profile_engine": "duckdb", "data_dir": folder}


@contextmanager
def _postgres(tmp_path: Path) -> Opener:
    import psycopg

    from audiences.engines.postgres import PostgresEngine

    try:
        admin = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL at {POSTGRES_URL} is unreachable")
    schema = f"audiences_test_{uuid.uuid4().hex[:12]}"
    try:
        settings = {
            "profile_engine": "postgres",
            "profile_engine_url": POSTGRES_URL,
            "profile_engine_schema": schema,
        }
        yield (lambda: PostgresEngine(POSTGRES_URL, schema=schema)), settings
    finally:
        admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.close()


CHDB_FOLDER = (
    Path(os.environ.get("AUDIENCES_TEST_CHDB_DIR", ""))
    if os.environ.get("AUDIENCES_TEST_CHDB_DIR")
    else None
)


def chdb_client() -> Any:
    """A client of the one embedded ClickHouse of this process (chdb binds a process to one
    folder: every test shares it, each in a database of its own)."""
    from audiences.engines.clickhouse_client import ChdbClient

    return ChdbClient(chdb_folder())


def chdb_folder() -> Path:
    """The folder of this process's embedded ClickHouse (removed when the process ends)."""
    global CHDB_FOLDER
    if CHDB_FOLDER is None:
        made = tempfile.mkdtemp(prefix="audiences-chdb-")
        atexit.register(shutil.rmtree, made, True)
        CHDB_FOLDER = Path(made)
    return CHDB_FOLDER


@contextmanager
def _clickhouse(tmp_path: Path) -> Opener:
    from audiences.engines.clickhouse import ClickHouseEngine

    database = f"audiences_test_{uuid.uuid4().hex[:12]}"
    admin = chdb_client()
    settings = {
        "profile_engine": "clickhouse",
        "profile_engine_url": f"chdb:{chdb_folder()}?database={database}",
    }
    try:
        yield (lambda: ClickHouseEngine(chdb_client(), database=database)), settings
    finally:
        admin.command(f"DROP DATABASE IF EXISTS `{database}`")
        admin.close()


OPENERS: dict[str, Callable[[Path], AbstractContextManager[Any]]] = {
    "duckdb": _duckdb,
    "postgres": _postgres,
    "clickhouse": _clickhouse,
}
"""How each kind's storage is made and dropped; the factory opens an engine on it."""
