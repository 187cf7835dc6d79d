"""Profile writes coordinated through the metadata database (PostgreSQL): the write lock, pids
and row versions several processes writing one ClickHouse database share.

It is the engines' ``WriteCoordinator`` (``engines/coordination.py``), built over the metadata
database a cluster already has. The lock is a PostgreSQL advisory lock held by a transaction
of its own (released with it, or when its connection drops); pids and versions are counters
in ``profile_writes``, each moved in a short transaction committed before the engine uses
what it got, so a crash never hands them out twice. PostgreSQL only: on SQLite the service's
own write transaction holds the database, and one process writes anyway.

A holder waits at most ``lock_timeout`` seconds for the lock (``profile_writes_busy``), and
checks the lock's connection before each ClickHouse insert (``profile_write_lock_lost``): a
lock whose connection dropped (``idle_in_transaction_session_timeout``, a restart) is no lock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, func, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError

from audiences.errors import ServiceUnavailable
from audiences.store.tables.profile_writes import ProfileWriteRow

LOCK_TIMEOUT_SECONDS = 30.0
"""How long a write waits for its workspace's lock before it fails (``profile_writes_busy``)."""

_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")
_TIMEOUT = text("SELECT set_config('lock_timeout', :timeout, true)")
_ALIVE = text("SELECT 1")
_LOCK_NOT_AVAILABLE = "55P03"


class ProfileWrites:
    """A workspace's write lock, pids and row versions, kept in the metadata database."""

    def __init__(self, engine: Engine, *, lock_timeout: float = LOCK_TIMEOUT_SECONDS) -> None:
        if engine.dialect.name != "postgresql":
            raise ValueError("profile writes are coordinated through PostgreSQL metadata only")
        self._engine = engine
        self._lock_timeout = lock_timeout

    @contextmanager
    def exclusive(self, workspace_id: str) -> Iterator[Callable[[], None]]:
        """Hold the workspace's write lock for the block, across processes; the block gets
        a check that the lock is still held (its connection alive), to call before it writes."""
        with self._engine.begin() as connection:
            timeout = f"{max(int(self._lock_timeout * 1000), 1)}ms"
            connection.execute(_TIMEOUT, {"timeout": timeout})
            try:
                connection.execute(_LOCK, {"key": f"audiences:profile_writes:{workspace_id}"})
            except DBAPIError as error:
                if getattr(error.orig, "sqlstate", None) != _LOCK_NOT_AVAILABLE:
                    raise
                raise ServiceUnavailable(
                    "Another process has been writing this workspace's profiles for more than"
                    f" {self._lock_timeout:g} s; try again.",
                    code="profile_writes_busy",
                ) from None
            yield lambda: _check_held(connection)
            if connection.invalidated:  # the lock was lost (and said so): nothing to commit
                connection.rollback()

    def reserve_pids(self, workspace_id: str, count: int, *, above: int) -> int:
        """The first of ``count`` new pids, all above ``above`` and every pid given before."""
        row = ProfileWriteRow.__table__.c
        high = self._bump(
            workspace_id,
            {"pid_high": above + count, "version": 0},
            {"pid_high": func.greatest(row.pid_high, above) + count},
            row.pid_high,
        )
        return high - count + 1

    def next_version(self, workspace_id: str, *, at_least: int) -> int:
        """A row version above every one given for the workspace, at least ``at_least``."""
        row = ProfileWriteRow.__table__.c
        return self._bump(
            workspace_id,
            {"pid_high": 0, "version": at_least},
            {"version": func.greatest(row.version + 1, at_least)},
            row.version,
        )

    def _bump(
        self, workspace_id: str, first: dict[str, int], update: dict[str, Any], column: Any
    ) -> int:
        """One counter moved (the row made on first use), committed before it returns."""
        statement = (
            insert(ProfileWriteRow)
            .values(workspace_id=workspace_id, **first)
            .on_conflict_do_update(index_elements=["workspace_id"], set_=update)
            .returning(column)
        )
        with self._engine.begin() as connection:
            return int(connection.execute(statement).scalar_one())


def _check_held(connection: Connection) -> None:
    """Fail with ``profile_write_lock_lost`` unless the lock's connection still answers."""
    try:
        connection.execute(_ALIVE)
    except DBAPIError:
        raise ServiceUnavailable(
            "The workspace's profile write lock was lost (its metadata database connection"
            " dropped); nothing more was written. Try again.",
            code="profile_write_lock_lost",
        ) from None
