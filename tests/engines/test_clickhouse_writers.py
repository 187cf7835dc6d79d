"""Several writers of one ClickHouse database, coordinated through PostgreSQL metadata
(``store.profile_writes``): no pid given twice, no profile created twice, no change lost.

chdb binds a process to one folder, so the writers are two engine objects in this process on
the same database, each with a coordinator of its own over the metadata database: they share
nothing but ClickHouse and PostgreSQL, as two API processes would.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine

from audiences.config import Settings
from audiences.engines import factory
from audiences.engines.base import EventRecord
from audiences.engines.clickhouse import ClickHouseEngine
from audiences.schemas.attributes import AttributeType
from audiences.store.db import make_engine, make_session_factory
from audiences.store.migrate import migrate
from audiences.store.profile_writes import ProfileWrites
from audiences.store.tables import WorkspaceRow
from tests.engines.kinds import chdb_client

pytestmark = pytest.mark.database

ROUNDS, SHARED_IDS, NEW_IDS, EVENTS = 6, 40, 10, 5
SEEN = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.fixture
def metadata(database_url: str) -> Iterator[Engine]:
    if not database_url.startswith("postgresql"):
        pytest.skip("several ClickHouse writers need PostgreSQL metadata to coordinate them")
    engine = make_engine(database_url)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def workspace_id(metadata: Engine) -> str:
    with make_session_factory(metadata).begin() as session:
        row = WorkspaceRow(slug=f"writers-{uuid.uuid4().hex[:12]}", name="Writers")
        session.add(row)
        session.flush()
        return row.id


@pytest.fixture
def writers(metadata: Engine) -> Iterator[list[ClickHouseEngine]]:
    database = f"audiences_test_{uuid.uuid4().hex[:12]}"
    made = [
        ClickHouseEngine(chdb_client(), database=database, coordinator=ProfileWrites(metadata))
        for _ in range(2)
    ]
    yield made
    for engine in made:
        engine.close()
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
