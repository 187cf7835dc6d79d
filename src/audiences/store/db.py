"""Engine and session factory: SQLite (WAL, foreign keys) by default, PostgreSQL in production."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from audiences.kit.files import private_dir

SQLITE_BUSY_TIMEOUT_MS = 30_000


def make_engine(url: str, *, read_only: bool = False) -> Engine:
    """An engine for ``url``; SQLite gets WAL, foreign keys and a busy timeout per connection.

    On SQLite, a ``read_only`` engine begins its transactions deferred and refuses writes
    (``PRAGMA query_only``): in WAL mode its readers never wait for writers or each other,
    while the writing engine takes the write lock up front. On PostgreSQL both are the same.
    """
    parsed = make_url(url)
    # hide_parameters: an error's message (logged with a 500 or a failed job) shows the SQL but
    # never its parameters, which hold profiles, ids and tokens' hashes.
    common: dict[str, Any] = {
        "json_serializer": _json_dumps,
        "json_deserializer": orjson.loads,
        "hide_parameters": True,
    }
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20, **common)
    if parsed.database and parsed.database != ":memory:":
        private_dir(Path(parsed.database).parent)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **common)
    event.listen(engine, "connect", _configure_sqlite)
    if read_only:
        event.listen(engine, "connect", _refuse_writes)
        event.listen(engine, "begin", _begin_deferred)
    else:
        writer = _Writer()
        event.listen(engine, "begin", writer.begin)
        event.listen(engine, "commit", writer.committed)
        event.listen(engine, "rollback", writer.rolled_back)
    return engine


def _json_dumps(value: Any) -> str:
    # orjson: JSON columns hold job payloads of up to 10,000 ids, which the standard library
    # encodes several times slower. Non-string keys become strings, as json.dumps makes them.
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy emit BEGIN itself (see _begin_immediate): pysqlite's own implicit
    # transactions start late and deferred, which turns concurrent writers into lock errors.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def _refuse_writes(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA query_only=ON")
    cursor.close()


def _begin_deferred(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN")


class _Writer:
    """Write transactions of one SQLite database, one at a time in this process, in the order
    they asked.

    Every transaction takes SQLite's write lock at its start (``BEGIN IMMEDIATE``), so two
    writers queue instead of one failing with "database is locked" when it upgrades a read
    lock. Left to SQLite, the queue is its busy handler: each waiter sleeps and retries, with
    sleeps growing to 100 ms, so under a burst of small writes some wait a second for a lock
    that was free most of that time. A lock of the process's own hands it over at once; SQLite's
    timeout still governs writers of other processes.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holder: Any = None

    def begin(self, connection: Any) -> None:
        if not self._lock.acquire(timeout=SQLITE_BUSY_TIMEOUT_MS / 1000):
            raise OperationalError("BEGIN IMMEDIATE", {}, Exception("database is locked"))
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            self._lock.release()
            raise
        self._holder = connection

    def committed(self, connection: Any) -> None:
        self._finish(connection, commit=True)

    def rolled_back(self, connection: Any) -> None:
        self._finish(connection, commit=False)

    def _finish(self, connection: Any, *, commit: bool) -> None:
        if self._holder is not connection:
            return
        self._holder = None
        try:
            # SQLAlchemy's commit and rollback events fire before the DBAPI call. Ending the
            # transaction here, before the lock is handed on, means the next writer's BEGIN
            # IMMEDIATE finds SQLite's lock free instead of sleeping in its busy handler; the
            # DBAPI call that follows finds no transaction and does nothing.
            if not connection.invalidated:
                driver = connection.connection.driver_connection
                driver.commit() if commit else driver.rollback()
        finally:
            self._lock.release()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after commit (responses are built after it)."""
    return sessionmaker(engine, expire_on_commit=False)
