"""Metadata databases for tests: a new, empty one per test session, per real server or per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

DATABASE_ENV = "AUDIENCES_TEST_DATABASE_URL"


@contextmanager
def fresh_database(folder: Path) -> Iterator[str]:
    """The URL of a new, empty metadata database, dropped afterwards: a SQLite file in
    ``folder``, or a database of its own on the server ``AUDIENCES_TEST_DATABASE_URL`` names."""
    server = os.environ.get(DATABASE_ENV)
    if not server:
        yield f"sqlite:///{folder / 'audiences.db'}"
        return
    with _database_on(server) as url:
        yield url


@contextmanager
def postgres_database() -> Iterator[str]:
    """The URL of a new, empty database of its own on a PostgreSQL server, dropped afterwards,
    whatever the session's metadata database is: ``AUDIENCES_TEST_DATABASE_URL`` when it names
    PostgreSQL, else the server the engine tests use (``AUDIENCES_TEST_POSTGRES_URL``, which
    CI starts for the default pass too). For what only PostgreSQL metadata does (coordinating
    several ClickHouse writers), so the default pass runs it as well."""
    server = os.environ.get(DATABASE_ENV, "")
    if not server.startswith("postgresql"):
        engines = os.environ.get(
            "AUDIENCES_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
        )
        server = (
            make_url(engines)
            .set(drivername="postgresql+psycopg")
            .render_as_string(hide_password=False)
        )
    probe = create_engine(server)
    try:
        with probe.connect():
            pass
    except OperationalError:
        pytest.skip(f"no PostgreSQL server at {make_url(server).render_as_string()}")
    finally:
        probe.dispose()
    with _database_on(server) as url:
        yield url


@contextmanager
def _database_on(server: str) -> Iterator[str]:
    name = f"audiences_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
