"""Metadata databases for tests: a new, empty one per test session, per real server or per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

DATABASE_ENV = "AUDIENCES_TEST_DATABASE_URL"


@contextmanager
def fresh_database(folder: Path) -> Iterator[str]:
    """The URL of a new, empty metadata database, dropped afterwards: a SQLite file in
    ``folder``, or a database of its own on the server ``AUDIENCES_TEST_DATABASE_URL`` names."""
    server = os.environ.get(DATABASE_ENV)
    if not server:
        yield f"sqlite:///{folder / 'audiences.db'}"
        return
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
