"""Engines: what an error of the metadata database shows, and the folders they create."""

from __future__ import annotations

import stat
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError

from audiences.store.db import make_engine

SECRET = "jane.doe@example.com"


def test_a_database_error_never_shows_its_parameters(database_url: str) -> None:
    """Issue #11: such messages reach the logs (a 500, a failed job) and parameters hold
    profiles, ids and hashes of tokens."""
    engine = make_engine(database_url)
    try:
        with pytest.raises(DBAPIError) as raised, engine.connect() as connection:
            connection.execute(text("SELECT * FROM no_such_table WHERE id = :id"), {"id": SECRET})
    finally:
        engine.dispose()
    assert "no_such_table" in str(raised.value)
    assert SECRET not in str(raised.value)


def test_a_new_sqlite_folder_is_private(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'new' / 'deeper' / 'audiences.db'}")
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    finally:
        engine.dispose()
    for folder in (tmp_path / "new", tmp_path / "new" / "deeper"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_a_connection_lost_mid_transaction_hands_the_write_lock_on(tmp_path: Path) -> None:
    """SQLite writers of one process queue on a lock of the process: a transaction that ends
    without a commit or rollback (its connection invalidated) must not keep it."""
    engine = make_engine(f"sqlite:///{tmp_path / 'lock.db'}")
    try:
        lost = engine.connect()
        transaction = lost.begin()
        lost.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        lost.invalidate()
        transaction.rollback()  # of an invalidated connection: nothing reaches the database
        lost.close()
        with engine.begin() as connection:  # would wait out the busy timeout, then fail
            connection.exec_driver_sql("CREATE TABLE u (x INTEGER)")
            connection.exec_driver_sql("INSERT INTO u VALUES (1)")
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT x FROM u").scalar() == 1
    finally:
        engine.dispose()


def test_the_write_lock_is_handed_on_only_after_the_commit(tmp_path: Path) -> None:
    """A writer that gets the process's lock must find SQLite's lock free: with SQLite's own
    busy wait turned off, a lock handed on before the previous COMMIT shows as "database is
    locked" in the next BEGIN IMMEDIATE (or as a lost increment)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'handover.db'}")

    @event.listens_for(engine, "connect")
    def _no_busy_wait(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA busy_timeout=0")

    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE counter (n INTEGER)")
        connection.exec_driver_sql("INSERT INTO counter VALUES (0)")
    failures: list[BaseException] = []

    def write(times: int) -> None:
        try:
            for _ in range(times):
                with engine.begin() as connection:
                    connection.exec_driver_sql("UPDATE counter SET n = n + 1")
        except BaseException as error:  # reported by the main thread
            failures.append(error)

    threads = [threading.Thread(target=write, args=(300,)) for _ in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT n FROM counter").scalar() == 1200
    finally:
        engine.dispose()
