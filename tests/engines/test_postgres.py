"""The PostgreSQL engine's own guarantees: writers in several processes, its COPY paths, its
condition checks, its errors when the server is missing."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from pyroaring import BitMap

from audiences.config import Settings
from audiences.engines import factory
from audiences.engines.base import EventRecord
from audiences.engines.postgres import PostgresEngine
from audiences.errors import Conflict, InvalidParameter, ServiceUnavailable, Unprocessable
from audiences.schemas.attributes import AttributeType
from tests.engines.conftest import SCHEMA, WS
from tests.engines.kinds import POSTGRES_URL, Store, opened


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A fresh PostgreSQL schema (skipped when the server is unreachable, outside CI)."""
    with opened("postgres", tmp_path) as made:
        yield made


@pytest.fixture
def engine(store: Store) -> PostgresEngine:
    engine = store.open()
    assert isinstance(engine, PostgresEngine)
    engine.ensure_attributes(WS, SCHEMA)
    return engine


def _upsert_in_process(url: str, schema: str, ids: list[str], start: object) -> None:
    """A separate process's writes: its own engine, its own connections."""
    engine = PostgresEngine(url, schema=schema)
    start.wait()  # type: ignore[attr-defined]
    for round_ in range(5):
        results = engine.upsert_profiles(WS, [(eid, {"age": round_}) for eid in ids])
        assert all(result.ok for result in results)
        engine.write_events(WS, [])
    engine.close()


def test_processes_upserting_the_same_new_ids_make_one_profile_each(
    engine: PostgresEngine,
) -> None:
    """Four processes write the same 300 new ids (in different orders) at once: every id
    gets exactly one pid, and nothing deadlocks for good."""
    ids = [f"u{n}" for n in range(300)]
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    orders = [ids, ids[::-1], ids[150:] + ids[:150], sorted(ids)]
    workers = [
        context.Process(target=_upsert_in_process, args=(POSTGRES_URL, engine.schema, o, start))
        for o in orders
    ]
    for worker in workers:
        worker.start()
    start.set()
    for worker in workers:
        worker.join(120)
    assert [worker.exitcode for worker in workers] == [0, 0, 0, 0]
    pids = engine.pids_for(WS, ids)
    assert None not in pids and len(set(pids)) == 300
    assert engine.count(WS) == 300
    assert engine.select_pids(WS, "age = 4") == BitMap(pids)  # type: ignore[arg-type]


def test_two_engines_see_each_others_writes_and_columns(
    store: Store, engine: PostgresEngine
) -> None:
    other = store.open()
    engine.upsert_profiles(WS, [("a", {"age": 1})])
    assert other.pids_for(WS, ["a"]) == [1]
    other.ensure_attributes(WS, {**SCHEMA, "plan": AttributeType.STRING})
    # The first engine writes the new column at once: writes read the columns under lock.
    [result] = engine.upsert_profiles(WS, [("a", {"plan": "pro"})])
    assert result.profile is not None and result.profile.attributes == {"age": 1, "plan": "pro"}
    assert set(other.select_pids(WS, "plan = 'pro'")) == {1}
    [again] = other.upsert_profiles(WS, [("a", {"age": 2})])
    assert again.pid == 1 and not again.created


def test_large_batches_and_member_sets_travel_by_copy(engine: PostgresEngine) -> None:
    records = [(f"u{n}", {"age": n % 100, "tags": ["t", str(n)]}) for n in range(20_000)]
    results = engine.upsert_profiles(WS, records)
    assert all(r.ok and r.created for r in results)
    assert [r.pid for r in results] == list(range(1, 20_001))
    everyone = engine.select_pids(WS, "age >= 0")
    assert everyone == BitMap(range(1, 20_001))
    members = BitMap(range(1, 20_001, 3)) | BitMap([2**32 - 1])  # the largest pid there is
    joined = engine.select_pids(
        WS, 'age < 50 AND "m_a".pid IS NOT NULL', memberships={"m_a": members}
    )
    wanted = {pid for pid in range(1, 20_001, 3) if (pid - 1) % 100 < 50}
    assert joined == BitMap(wanted)


@pytest.mark.parametrize(
    "where_sql",
    [
        "age > 1; DROP TABLE x",
        "pid IN (SELECT pid FROM pg_catalog.pg_class)",
        "EXISTS (SELECT 1 FROM events AS e WHERE e.pid = 1)",
        "age > (SELECT max(pid) FROM other AS o WHERE o.pid = profiles.pid)",
        "COPY x TO PROGRAM 'sh'",
        "age >",
        "pg_sleep(10) IS NULL",
        "age > 1 OR pg_read_file('/etc/passwd') = ''",
        "set_config('search_path', 'x', false) = 'x'",
        "COALESCE((SELECT a.v FROM (SELECT e.pid, lo_export(1, '/tmp/x') AS v FROM events AS e"
        " GROUP BY e.pid) AS a WHERE a.pid = profiles.pid), 0) > 1",
    ],
)
def test_conditions_outside_the_compilers_shapes_are_refused(
    engine: PostgresEngine, where_sql: str
) -> None:
    with pytest.raises(Unprocessable) as caught:
        engine.select_pids(WS, where_sql)
    assert caught.value.code == "engine_condition_invalid"


def test_behavioural_conditions_read_the_workspaces_events(engine: PostgresEngine) -> None:
    when = datetime(2026, 1, 1, tzinfo=UTC)
    engine.write_events(WS, [EventRecord("a", "order", when), EventRecord("a", "order", when)])
    engine.write_events(WS, [EventRecord("b", "order", when)])
    twice = (
        "COALESCE((SELECT a.v FROM (SELECT e.pid, COUNT(*) AS v FROM events AS e"
        " WHERE e.\"event\" = 'order' GROUP BY e.pid) AS a WHERE a.pid = profiles.pid), 0) >= 2"
    )
    assert engine.select_pids(WS, twice) == BitMap(engine.pids_for(WS, ["a"]))  # type: ignore[arg-type]


def test_parameters_are_written_in_as_quoted_literals(engine: PostgresEngine) -> None:
    engine.upsert_profiles(WS, [("a", {"country": "it's"}), ("b", {"country": "x"})])
    assert set(engine.select_pids(WS, "country = ?", ["it's"])) == {1}
    assert set(engine.select_pids(WS, "country = $c", {"c": "x' OR TRUE --"})) == set()
    assert set(engine.select_pids(WS, "country LIKE '%zz%s' OR country = $1", ["x"])) == {2}
    with pytest.raises(InvalidParameter):
        engine.select_pids(WS, "country = ? AND age = ?", ["x"])


def test_text_with_nul_fails_its_record_alone(engine: PostgresEngine) -> None:
    results = engine.upsert_profiles(WS, [("a", {"country": "x\x00"}), ("b", {"country": "y"})])
    assert [r.ok for r in results] == [False, True]
    assert results[0].errors[0].code == "text_invalid"
    assert engine.pids_for(WS, ["a", "b"]) == [None, 1]


def test_an_unreachable_server_is_a_clear_error() -> None:
    with pytest.raises(ServiceUnavailable) as caught:
        PostgresEngine("postgresql://postgres@127.0.0.1:1/none", connect_timeout=1)
    assert caught.value.code == "engine_unavailable"
    assert "PostgreSQL profile engine is unavailable" in caught.value.detail


def test_the_factory_needs_a_postgresql_url(tmp_path: Path) -> None:
    sqlite = Settings(data_dir=tmp_path, profile_engine="postgres")
    with pytest.raises(ServiceUnavailable) as caught:
        factory.open_engine(sqlite)
    assert "AUDIENCES_PROFILE_ENGINE_URL" in caught.value.detail
    metadata = Settings(
        data_dir=tmp_path,
        profile_engine="postgres",
        database_url="postgresql+psycopg://postgres@127.0.0.1:5432/test",
    )
    assert factory.postgres_url(metadata) == "postgresql://postgres@127.0.0.1:5432/test"
    assert factory.shared(metadata) and not factory.shared(Settings(data_dir=tmp_path))


def test_a_bad_schema_name_is_refused() -> None:
    with pytest.raises(InvalidParameter):
        PostgresEngine(POSTGRES_URL, schema="Bad-Name")


def test_connections_the_server_dropped_are_replaced(engine: PostgresEngine) -> None:
    engine.upsert_profiles(WS, [("a", {"age": 1})])
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        ended = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = 'audiences-profiles' AND query NOT LIKE '%pg_terminate%'"
            " AND backend_type = 'client backend' AND datname = current_database()"
            " AND pid IN (SELECT pid FROM pg_stat_activity WHERE state = 'idle')"
        ).fetchone()
    assert ended is not None and ended[0] >= 1
    engine.ping()
    assert engine.pids_for(WS, ["a"]) == [1]


def test_the_sequence_end_is_a_conflict(engine: PostgresEngine) -> None:
    engine.upsert_profiles(WS, [("a", {})])
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f'ALTER SEQUENCE "{engine.schema}"."pids_1" RESTART WITH 4294967295')
    [last] = engine.upsert_profiles(WS, [("b", {})])
    assert last.pid == 2**32 - 1
    # Past 2^26 pids drawn, pids are read in ranges (a bytea holds at most 1 GB).
    assert engine.select_pids(WS, "TRUE") == BitMap([1, 2**32 - 1])
    with pytest.raises(Conflict) as caught:
        engine.upsert_profiles(WS, [("c", {})])
    assert caught.value.code == "pids_exhausted"
    with pytest.raises(Conflict):
        engine.ensure_profiles(WS, ["d"])
    assert engine.count(WS) == 2


def _together(*calls: Callable[[], object]) -> None:
    """Run the calls on threads at once; re-raise the first failure."""
    errors: list[BaseException] = []
    start = threading.Barrier(len(calls))

    def run(call: Callable[[], object]) -> None:
        try:
            start.wait()
            call()
        except BaseException as error:  # reported below, in the main thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_engines_declaring_and_writing_events_at_once_agree(
    store: Store, engine: PostgresEngine
) -> None:
    """Two engines (two pools: as two processes) declare the same attributes and write the
    same events with ids at once: one column each, each event stored once."""
    other = store.open()
    wanted = {**SCHEMA, **{f"a{n}": AttributeType.INTEGER for n in range(10)}}
    _together(*(lambda e=e: e.ensure_attributes(WS, wanted) for e in (engine, other)))
    assert engine.attributes(WS) == other.attributes(WS) == wanted
    when = datetime(2026, 1, 1, tzinfo=UTC)
    records = [EventRecord(f"u{n % 7}", "order", when, event_id=f"e{n}") for n in range(300)]
    _together(*(lambda e=e: e.write_events(WS, records) for e in (engine, other)))
    pids = [pid for pid in engine.pids_for(WS, [f"u{n}" for n in range(7)]) if pid]
    assert len(pids) == 7
    stored = engine.events_of(WS, pids)
    assert sum(len(events) for events in stored.values()) == 300
