"""Profile writes coordinated through PostgreSQL metadata: disjoint pid blocks above every
floor, versions that only grow, and a write lock that one holder has at a time."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import Engine, text

from audiences.errors import ServiceUnavailable
from audiences.store.db import make_engine, make_session_factory
from audiences.store.migrate import migrate
from audiences.store.profile_writes import ProfileWrites
from audiences.store.tables import WorkspaceRow
from tests.databases import postgres_database

pytestmark = pytest.mark.database


@pytest.fixture(scope="module")
def metadata() -> Iterator[Engine]:
    """PostgreSQL metadata of its own, where the coordinator lives, whatever the session's
    metadata database is (so the default pass runs these tests too)."""
    with postgres_database() as url:
        engine = make_engine(url)
        migrate(engine)
        yield engine
        engine.dispose()


@pytest.fixture
def workspace_id(metadata: Engine) -> str:
    with make_session_factory(metadata).begin() as session:
        row = WorkspaceRow(slug=f"writes-{uuid.uuid4().hex[:12]}", name="Writes")
        session.add(row)
        session.flush()
        return row.id


def test_sqlite_metadata_is_refused() -> None:
    engine = make_engine("sqlite://")
    with pytest.raises(ValueError, match="PostgreSQL"):
        ProfileWrites(engine)
    engine.dispose()


def test_concurrent_reservations_get_disjoint_blocks_above_the_floor(
    metadata: Engine, workspace_id: str
) -> None:
    writes = ProfileWrites(metadata)
    with ThreadPoolExecutor(8) as pool:
        firsts = list(pool.map(lambda _: writes.reserve_pids(workspace_id, 10, above=5), range(40)))
    pids = [pid for first in firsts for pid in range(first, first + 10)]
    assert len(set(pids)) == 400 and min(pids) == 6 and max(pids) == 405
    assert writes.reserve_pids(workspace_id, 0, above=1000) == 1001  # a floor, no pid given
    assert writes.reserve_pids(workspace_id, 3, above=0) == 1001


def test_versions_only_grow_whatever_the_clock_says(metadata: Engine, workspace_id: str) -> None:
    writes = ProfileWrites(metadata)
    first = writes.next_version(workspace_id, at_least=1_000)
    assert first == 1_000
    assert writes.next_version(workspace_id, at_least=10) == 1_001  # a clock behind
    assert writes.next_version(workspace_id, at_least=5_000) == 5_000  # a clock ahead


def test_one_holder_of_the_write_lock_at_a_time(metadata: Engine, workspace_id: str) -> None:
    writes, inside, overlaps = ProfileWrites(metadata), [0], []
    guard = threading.Lock()

    def hold(_: int) -> None:
        with writes.exclusive(workspace_id):
            with guard:
                inside[0] += 1
                overlaps.append(inside[0])
            time.sleep(0.02)
            with guard:
                inside[0] -= 1

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(hold, range(12)))
    assert overlaps == [1] * 12


def test_a_holder_waits_a_bounded_time_for_the_lock(metadata: Engine, workspace_id: str) -> None:
    impatient = ProfileWrites(metadata, lock_timeout=0.1)
    busy = ProfileWrites(metadata).exclusive(workspace_id)
    with busy, pytest.raises(ServiceUnavailable) as raised, impatient.exclusive(workspace_id):
        pass
    assert raised.value.code == "profile_writes_busy" and raised.value.status == 503
    with impatient.exclusive(workspace_id) as held:  # free again: taken at once
        held()


def test_the_check_fails_once_the_locks_connection_is_gone(
    metadata: Engine, workspace_id: str
) -> None:
    writes = ProfileWrites(metadata)
    with writes.exclusive(workspace_id) as held:
        held()  # alive
        with metadata.connect() as other:
            holder = other.execute(
                text(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
                    " AND objsubid = 1 AND (classid::bigint << 32 | objid::bigint)"
                    " = hashtextextended(:key, 0)"
                ),
                {"key": f"audiences:profile_writes:{workspace_id}"},
            ).scalar_one()
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": holder})
        with pytest.raises(ServiceUnavailable) as raised:
            held()
    assert raised.value.code == "profile_write_lock_lost"
    with writes.exclusive(workspace_id) as held:  # the lock went with its connection
        held()
