"""ClickHouse engine internals the shared suite does not see: bitmaps in both serialized forms,
versioned rows and tombstones through merges, pids never reused, dotted list columns, URLs."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pyroaring import BitMap

from audiences.config import Settings
from audiences.engines import clickhouse_sql as sql
from audiences.engines.base import EventRecord, Reachable
from audiences.engines.clickhouse import ClickHouseEngine
from audiences.engines.clickhouse_client import SETTINGS, ChdbClient, ServerClient, connect
from audiences.engines.factory import open_engine
from audiences.errors import ServiceUnavailable, Unprocessable, ValidationFailed
from audiences.schemas.attributes import AttributeType
from audiences.schemas.events import Event
from tests.engines.kinds import chdb_client, chdb_folder

WS = "acme"


@pytest.fixture
def database() -> Iterator[str]:
    """A database of its own in the process's embedded ClickHouse, dropped afterwards."""
    name = f"audiences_test_{uuid.uuid4().hex[:12]}"
    yield name
    admin = chdb_client()
    admin.command(f"DROP DATABASE IF EXISTS {name}")
    admin.close()


@pytest.fixture
def engine(database: str) -> Iterator[ClickHouseEngine]:
    made = ClickHouseEngine(chdb_client(), database=database)
    made.ensure_attributes(WS, {"age": AttributeType.INTEGER})
    yield made
    made.close()


def _state_flag(client: ChdbClient, count: int) -> int:
    """The first byte of ClickHouse's own bitmap of ``count`` ids: 0 small, 1 Roaring."""
    state = client.query(
        f"SELECT groupBitmapState(toUInt32(number + 1)) FROM numbers({count})", "RowBinary"
    )
    return state[0]


@pytest.mark.parametrize("count", [0, 1, 32, 33, 70_000])
def test_bitmaps_are_read_in_both_serialized_forms(engine: ClickHouseEngine, count: int) -> None:
    client = chdb_client()
    try:
        # ClickHouse writes a set of up to 32 as a plain array, a larger one as Roaring.
        assert _state_flag(client, count) == (0 if count <= 32 else 1)
        state = client.query(
            f"SELECT groupBitmapState(toUInt32(number * 3 + 1)) FROM numbers({count})",
            "RowBinary",
        )
    finally:
        client.close()
    assert sql.read_bitmap(state) == BitMap(range(1, 3 * count + 1, 3))


@pytest.mark.parametrize("size", [0, 1, 32, 33, 1_000])
def test_member_sets_of_every_size_join_under_their_alias(
    engine: ClickHouseEngine, size: int
) -> None:
    engine.upsert_profiles(WS, [(f"u{n}", {"age": n}) for n in range(1, 1_201)])
    members = BitMap(range(1, 2 * size + 1, 2))
    found = engine.select_pids(WS, "m_x.pid IS NOT NULL AND age > 10", memberships={"m_x": members})
    everyone = BitMap(range(1, 1_201))
    assert found == BitMap(pid for pid in members & everyone if pid > 10)
    outside = engine.select_pids(WS, "m_x.pid IS NULL", memberships={"m_x": members})
    assert outside == everyone - members


def test_long_statements_run(engine: ClickHouseEngine) -> None:
    """A member set and a batch of ids each travel as one literal: a set of a million
    scattered pids (500 KiB of hex) and 10,000 ids of 40 characters pass the 256 KiB
    ClickHouse allows a statement by default."""
    ids = [f"customer-{n:020d}@example.com" for n in range(10_000)]
    assert all(result.ok for result in engine.upsert_profiles(WS, [(i, {}) for i in ids]))
    members = BitMap(range(1, 2_000_000, 2))
    assert 2 * len(members.serialize()) > 256 * 1024  # written in hex
    found = engine.select_pids(WS, "m_x.pid IS NOT NULL", memberships={"m_x": members})
    assert found == members & BitMap(range(1, 10_001))


def test_rewrites_and_deletes_survive_merges(engine: ClickHouseEngine, database: str) -> None:
    for age in range(5):
        engine.upsert_profiles(WS, [(f"u{n}", {"age": age * 10 + n}) for n in range(1, 101)])
    deleted = [engine.delete_profile(WS, f"u{n}") for n in (1, 100)]
    assert deleted == [1, 100]
    client = chdb_client()
    try:
        client.command(f"OPTIMIZE TABLE {database}.profiles_acme FINAL")
        rows = sql.rows(
            client.query(f"SELECT count() FROM {database}.profiles_acme", "JSONCompact")
        )
    finally:
        client.close()
    assert rows[0][0] == 100  # one row per pid (tombstones included) once merged
    assert engine.count(WS) == 98
    assert engine.pids_for(WS, ["u1", "u2", "u100"]) == [None, 2, None]
    assert set(engine.select_pids(WS, "age >= 40")) == set(range(2, 100))


def test_pids_are_never_reused_after_a_reopen(database: str) -> None:
    first = ClickHouseEngine(chdb_client(), database=database)
    pids, _ = first.ensure_profiles(WS, ["a", "b", "c"])
    assert first.delete_profile(WS, "c") == pids[-1] == 3
    first.close()
    again = ClickHouseEngine(chdb_client(), database=database)
    try:
        assert again.ensure_profiles(WS, ["c", "d"]) == ([4, 5], 2)
    finally:
        again.close()


def test_dotted_list_attributes_of_different_lengths(engine: ClickHouseEngine) -> None:
    """Array columns named ``p.x`` would be one Nested structure with equal lengths; lists are
    Variants, so they are not."""
    schema = {"p.tags": AttributeType.STRING_LIST, "p.nums": AttributeType.NUMBER_LIST}
    engine.ensure_attributes(WS, {"age": AttributeType.INTEGER, **schema})
    [result] = engine.upsert_profiles(WS, [("u1", {"p": {"tags": ["a", "b"], "nums": []}})])
    assert result.ok
    profile = engine.get_profile(WS, "u1")
    assert profile is not None and profile.attributes == {"p.tags": ["a", "b"], "p.nums": []}
    assert engine.attributes(WS) == {"age": AttributeType.INTEGER, **schema}


def test_the_factory_opens_chdb_on_the_configured_folder(tmp_path: Path, database: str) -> None:
    settings = Settings(
        data_dir=tmp_path,
        profile_engine="clickhouse",
        profile_engine_url=f"chdb:{chdb_folder()}?database={database}",
    )
    engine = open_engine(settings)
    try:
        assert isinstance(engine, ClickHouseEngine) and engine.dialect == "clickhouse"
        assert isinstance(engine, Reachable)
        engine.ping()
        engine.ensure_profiles(WS, ["a"])
        client = chdb_client()
        tables = client.query(f"SHOW TABLES FROM {database}", "TSV").decode().split()
        client.close()
        assert "profiles_acme" in tables
    finally:
        engine.close()


def test_an_unreachable_server_is_reported_as_such() -> None:
    with pytest.raises(ServiceUnavailable, match=r"127\.0\.0\.1 does not answer") as caught:
        ServerClient.connect("http://default:secret@127.0.0.1:1/analytics")
    assert caught.value.code == "engine_unavailable"


def test_urls_name_a_server_or_a_folder(tmp_path: Path) -> None:
    client, database = connect(f"chdb:{chdb_folder()}", tmp_path)
    client.close()
    assert database == "audiences"
    with pytest.raises(ValueError, match="http"):
        connect("ftp://host/db", tmp_path)


@pytest.mark.parametrize(
    "where_sql",
    [
        "age > 1 OR file('/etc/passwd') = ''",
        "getSetting('readonly') = 0",
        "sleep(3) = 0",
        "age IN (SELECT number FROM numbers(10))",
        "age > 1 AND pid IN (SELECT pid FROM url('http://127.0.0.1:1/x', CSV, 'pid UInt32'))",
    ],
)
def test_conditions_never_reach_clickhouses_own_functions(
    engine: ClickHouseEngine, where_sql: str
) -> None:
    with pytest.raises(Unprocessable) as caught:
        engine.select_pids(WS, where_sql)
    assert caught.value.code == "engine_condition_invalid"


SERVER_ENV = "AUDIENCES_TEST_CLICKHOUSE_URL"
NO_SERVER = (
    f"no ClickHouse server: set {SERVER_ENV}=http://user:password@host:8123 to run the server"
    " client over HTTP (Debian bookworm packages ClickHouse 18.16, without Variant types or"
    " JSONColumns; PyPI has no server)"
)


@pytest.fixture(params=["chdb", "server"])
def connected(request: pytest.FixtureRequest, database: str) -> Iterator[ClickHouseEngine]:
    """The engine over :class:`ServerClient`: clickhouse-connect on its own chdb backend (the
    process's folder) with the settings a server connection gets, and over HTTP on a real
    server when ``AUDIENCES_TEST_CLICKHOUSE_URL`` names one (skipped otherwise)."""
    import clickhouse_connect

    if request.param == "chdb":
        dsn = f"chdb://{chdb_folder()}"
        client = ServerClient(clickhouse_connect.get_client(dsn=dsn, settings=dict(SETTINGS)))
    else:
        url = os.environ.get(SERVER_ENV)
        if not url:
            pytest.skip(NO_SERVER)
        client = ServerClient.connect(url)
    made = ClickHouseEngine(client, database=database)
    yield made
    if request.param == "server":
        client.command(f"DROP DATABASE IF EXISTS {database}")
    made.close()


def test_the_server_client_writes_and_reads_through_clickhouse_connect(
    connected: ClickHouseEngine,
) -> None:
    """What only the server path does differently: statements through ``raw_query``, rows
    through ``raw_insert`` (column names quoted by clickhouse-connect), errors mapped."""
    engine = connected
    schema = {"age": AttributeType.INTEGER, "p.tags": AttributeType.STRING_LIST}
    engine.ensure_attributes(WS, schema)
    engine.ensure_event_properties(WS, {"amount": AttributeType.FLOAT})
    results = engine.upsert_profiles(
        WS, [("a", {"age": 40, "p": {"tags": ["x\n'"]}}), ("b", {"age": 20})]
    )
    assert [r.pid for r in results] == [1, 2]
    assert engine.attributes(WS) == schema
    assert engine.select_pids(WS, "age > ?", [30]) == BitMap([1])
    assert engine.select_pids(WS, "m_a.pid IS NULL", memberships={"m_a": BitMap([1])}) == BitMap(
        [2]
    )
    profile = engine.get_profile(WS, "a")
    assert profile is not None and profile.attributes == {"age": 40, "p.tags": ["x\n'"]}
    moment = datetime(2024, 1, 1, tzinfo=UTC)
    written = engine.write_events(WS, [EventRecord("c", "order", moment, {"amount": 2.5}, "e1")])
    assert [r.pid for r in written] == [3]
    assert engine.events_of(WS, [3]) == {3: [Event("order", moment, {"amount": 2.5})]}
    assert engine.delete_profile(WS, "c") == 3 and engine.events_of(WS, [3]) == {}
    with pytest.raises(Unprocessable) as caught:
        engine.select_pids(WS, "no_such_column = 1")
    assert caught.value.code == "engine_query_failed"
    engine.ping()


@pytest.mark.parametrize(
    "select_sql",
    [
        "SELECT file('/etc/passwd') FROM profiles",
        "SELECT pid FROM url('http://127.0.0.1:1/x', CSV, 'pid UInt32')",
        "SELECT pid FROM system.one",
        "SELECT getSetting('readonly') FROM profiles",
        "SELECT external_id FROM profiles SETTINGS readonly = 0",
    ],
)
def test_member_queries_never_reach_clickhouses_own_functions_or_tables(
    engine: ClickHouseEngine, select_sql: str
) -> None:
    with pytest.raises(ValidationFailed) as caught:
        engine.select_query_pids(WS, select_sql)
    assert caught.value.code == "sync_query_invalid"


def test_member_queries_see_live_profiles_only(engine: ClickHouseEngine) -> None:
    engine.upsert_profiles(WS, [("a", {"age": 1}), ("b", {"age": 2})])
    engine.upsert_profiles(WS, [("a", {"age": 30})])
    engine.delete_profile(WS, "b")
    assert engine.select_query_pids(WS, "SELECT external_id FROM profiles") == BitMap([1])
    assert engine.select_query_pids(WS, "SELECT pid FROM profiles WHERE age = 1") == BitMap()


@pytest.mark.parametrize("module", ["chdb", "clickhouse_connect"])
def test_a_missing_clickhouse_extra_is_one_clear_error(
    module: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # as if the extra were not installed
    with pytest.raises(ServiceUnavailable) as caught:
        if module == "chdb":
            ChdbClient(tmp_path / "missing")
        else:
            ServerClient.connect("http://127.0.0.1:9/db")
    assert caught.value.code == "engine_unavailable"
    assert "audiences[clickhouse]" in caught.value.detail
