"""Several writers of one ClickHouse database, coordinated through PostgreSQL metadata
(``store.profile_writes``): no pid given twice, no profile created twice, no change lost.

chdb binds a process to one folder, so the writers are two engine objects in this process on
the same database, each with a coordinator of its own over the metadata database: they share
nothing but ClickHouse and PostgreSQL, as two API processes would.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, event, text

from audiences.config import Settings
from audiences.engines import factory
from audiences.engines.base import EventRecord, Profile
from audiences.engines.clickhouse import ClickHouseEngine
from audiences.engines.duckdb_sql import table_name
from audiences.errors import ServiceUnavailable
from audiences.schemas.attributes import AttributeType
from audiences.store.db import make_engine, make_session_factory
from audiences.store.migrate import migrate
from audiences.store.profile_writes import ProfileWrites
from audiences.store.tables import WorkspaceRow
from tests.databases import postgres_database
from tests.engines.kinds import chdb_client

pytestmark = pytest.mark.database

ROUNDS, SHARED_IDS, NEW_IDS, EVENTS = 6, 40, 10, 5
SEEN = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def metadata() -> Iterator[Engine]:
    """PostgreSQL metadata of its own, where the coordinator lives, whatever the session's
    metadata database is (so the default pass runs these tests too)."""
    with postgres_database() as url:
        engine = make_engine(url)
        migrate(engine)
        yield engine
        engine.dispose()


def _new_workspace(metadata: Engine) -> str:
    with make_session_factory(metadata).begin() as session:
        row = WorkspaceRow(slug=f"writers-{uuid.uuid4().hex[:12]}", name="Writers")
        session.add(row)
        session.flush()
        return row.id


@pytest.fixture
def workspace_id(metadata: Engine) -> str:
    return _new_workspace(metadata)


@pytest.fixture
def database() -> str:
    return f"audiences_test_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def writers(metadata: Engine, database: str) -> Iterator[list[ClickHouseEngine]]:
    made = [
        ClickHouseEngine(chdb_client(), database=database, coordinator=ProfileWrites(metadata))
        for _ in range(2)
    ]
    yield made
    for engine in made:
        engine.close()
    _drop(database)


def _drop(database: str) -> None:
    admin = chdb_client()
    admin.command(f"DROP DATABASE IF EXISTS {database}")
    admin.close()


def _write(engine: ClickHouseEngine, ws: str, name: str, errors: list[BaseException]) -> None:
    """Every round: the shared ids updated, ids new to both writers created by both, and the
    same events (same ``event_id``) sent by both."""
    try:
        for round_ in range(ROUNDS):
            records = [(f"u{n}", {name: round_}) for n in range(SHARED_IDS)]
            records += [(f"r{round_}-{n}", {name: 1}) for n in range(NEW_IDS)]
            assert all(result.ok for result in engine.upsert_profiles(ws, records))
            events = [
                EventRecord(f"u{n}", "seen", SEEN, event_id=f"e{round_}-{n}") for n in range(EVENTS)
            ]
            assert all(result.ok for result in engine.write_events(ws, events))
    except BaseException as error:  # reported by the test's thread
        errors.append(error)


def test_two_writers_give_no_pid_twice_and_lose_no_profile_or_change(
    writers: list[ClickHouseEngine], workspace_id: str
) -> None:
    ws = workspace_id
    # Each writer declares its own attribute: the other must read it under the lock.
    writers[0].ensure_attributes(ws, {"a": AttributeType.INTEGER})
    writers[1].ensure_attributes(ws, {"b": AttributeType.INTEGER})
    errors: list[BaseException] = []
    threads = [
        threading.Thread(target=_write, args=(engine, ws, name, errors))
        for engine, name in zip(writers, "ab", strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    ids = [f"u{n}" for n in range(SHARED_IDS)]
    ids += [f"r{r}-{n}" for r in range(ROUNDS) for n in range(NEW_IDS)]
    reader = writers[0]
    pids = reader.pids_for(ws, ids)
    assert None not in pids and len(set(pids)) == len(ids)  # one pid per profile, none shared
    assert reader.count(ws) == len(ids)  # no profile created twice
    last = ROUNDS - 1
    for external_id in ids[:SHARED_IDS]:
        profile = reader.get_profile(ws, external_id)
        assert profile is not None and profile.attributes == {"a": last, "b": last}
    for external_id in ids[SHARED_IDS:]:
        profile = reader.get_profile(ws, external_id)
        assert profile is not None and profile.attributes == {"a": 1, "b": 1}
    assert reader.count_events(ws) == ROUNDS * EVENTS  # each event_id stored once
    fresh = writers[1].ensure_profiles(ws, ["late"])[0][0]
    assert fresh > max(p for p in pids if p is not None)  # pids only grow, across writers


def _waiting_for_the_lock(metadata: Engine, workspace_id: str) -> bool:
    """Whether a process waits for the workspace's write lock."""
    query = text(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND objsubid = 1 AND (classid::bigint << 32 | objid::bigint) = hashtextextended(:key, 0)"
    )
    with metadata.connect() as connection:
        key = f"audiences:profile_writes:{workspace_id}"
        return bool(connection.execute(query, {"key": key}).scalar_one())


def _finishes(work: Any) -> bool:
    """Whether ``work`` returns within a generous bound (a liveness check: a call stalled
    behind a lock never returns)."""
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(30)
    return not thread.is_alive()


def test_reads_and_other_workspaces_writes_do_not_wait_for_a_workspace_lock(
    writers: list[ClickHouseEngine], metadata: Engine, workspace_id: str
) -> None:
    engine, ws, other = writers[0], workspace_id, _new_workspace(metadata)
    (pid,), _ = engine.ensure_profiles(ws, ["u1"])
    engine.ensure_profiles(other, ["v1"])
    blocked: list[Any] = []
    # Another process writes `ws` (holds its lock); a write of `ws` here waits for it.
    with ProfileWrites(metadata).exclusive(ws):
        writer = threading.Thread(target=lambda: blocked.append(engine.ensure_profiles(ws, ["u2"])))
        writer.start()
        while not _waiting_for_the_lock(metadata, ws):
            time.sleep(0.01)
        assert _finishes(lambda: engine.get_profile(ws, "u1"))
        assert _finishes(lambda: engine.select_pids(ws, "external_id = 'u1'"))
        assert _finishes(lambda: engine.external_ids_for(ws, [pid]))
        assert _finishes(lambda: engine.ensure_profiles(other, ["v2"]))
        assert not blocked  # still waiting for the other process
    writer.join()
    assert engine.external_ids_for(ws, [pid]) == ["u1"]
    assert engine.pids_for(other, ["v2"])[0] is not None
    assert blocked and engine.get_profile(ws, "u2") is not None


def test_a_write_waits_a_bounded_time_for_the_lock_and_writes_nothing(
    metadata: Engine, database: str, workspace_id: str
) -> None:
    engine = ClickHouseEngine(
        chdb_client(), database=database, coordinator=ProfileWrites(metadata, lock_timeout=0.2)
    )
    try:
        busy = ProfileWrites(metadata).exclusive(workspace_id)
        with busy, pytest.raises(ServiceUnavailable) as raised:
            engine.upsert_profiles(workspace_id, [("u1", {"a": 1})])
        assert raised.value.code == "profile_writes_busy" and raised.value.status == 503
        assert engine.count(workspace_id) == 0
    finally:
        engine.close()
        _drop(database)


class _CrashingReservations(ProfileWrites):
    """The metadata database lost while pids are reserved (a crash at that point)."""

    def reserve_pids(self, workspace_id: str, count: int, *, above: int) -> int:
        raise RuntimeError("crashed while reserving pids")


def test_a_crash_during_an_import_gives_no_pid_to_two_profiles(
    writers: list[ClickHouseEngine], metadata: Engine, database: str, workspace_id: str
) -> None:
    ws, other = workspace_id, writers[1]
    other.ensure_attributes(ws, {})  # the other writer knows the workspace already
    importer = ClickHouseEngine(
        chdb_client(), database=database, coordinator=_CrashingReservations(metadata)
    )
    moved = [Profile(pid, f"i{pid}", {}, SEEN) for pid in (3, 4, 5)]
    try:
        with pytest.raises(RuntimeError, match="crashed"):
            importer.import_profiles(ws, moved)
    finally:
        importer.close()
    other.ensure_profiles(ws, [f"n{n}" for n in range(5)])
    admin = chdb_client()
    try:
        shared = admin.query(
            f"SELECT count() FROM (SELECT pid FROM {database}.{table_name(ws)}"
            " GROUP BY pid HAVING uniqExact(external_id) > 1)",
            "TSV",
        )
    finally:
        admin.close()
    assert shared.strip() == b"0"  # no pid holds rows of two profiles


def test_the_last_pid_counts_every_writer(
    writers: list[ClickHouseEngine], workspace_id: str
) -> None:
    writers[0].ensure_profiles(workspace_id, ["x"])
    pids, _ = writers[1].ensure_profiles(workspace_id, [f"y{n}" for n in range(5)])
    assert writers[0].last_pid(workspace_id) == max(pids)


def test_a_lost_lock_stops_the_write_before_it_writes(
    writers: list[ClickHouseEngine], metadata: Engine, workspace_id: str
) -> None:
    def lose_the_lock(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if "pg_advisory_xact_lock" in statement:
            with metadata.connect() as other:
                backend = cursor.connection.info.backend_pid
                other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})

    event.listen(metadata, "after_cursor_execute", lose_the_lock)
    try:
        with pytest.raises(ServiceUnavailable) as raised:
            writers[0].upsert_profiles(workspace_id, [("u1", {})])
    finally:
        event.remove(metadata, "after_cursor_execute", lose_the_lock)
    assert raised.value.code == "profile_write_lock_lost"
    assert writers[1].count(workspace_id) == 0
    assert writers[0].upsert_profiles(workspace_id, [("u1", {})])[0].ok  # a new lock, a write


@pytest.mark.parametrize(
    ("url", "metadata", "shared"),
    [
        ("https://u:p@clickhouse:8443/audiences", "postgresql+psycopg://pg/meta", True),
        ("https://u:p@clickhouse:8443/audiences", "sqlite:///meta.db", False),
        ("chdb:/var/lib/audiences/clickhouse", "postgresql://pg/meta", False),
        ("", "postgresql://pg/meta", False),
    ],
)
def test_worker_processes_open_a_clickhouse_server_beside_postgresql_metadata(
    url: str, metadata: str, shared: bool
) -> None:
    settings = Settings(profile_engine="clickhouse", profile_engine_url=url, database_url=metadata)
    assert factory.shared(settings) is shared
