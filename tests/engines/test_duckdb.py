"""DuckDB engine internals on real files: its file, legacy rows and repairs of old files."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
from pyroaring import BitMap

from audiences.engines.duckdb import DuckDBEngine
from audiences.schemas.attributes import AttributeType
from tests.engines.conftest import SCHEMA, WS
from tests.engines.test_events import PROPERTIES, _at


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[DuckDBEngine]:
    """A DuckDB engine on a fresh file, with workspace ``acme`` declaring ``SCHEMA``."""
    engine = DuckDBEngine(tmp_path)
    engine.ensure_attributes(WS, SCHEMA)
    yield engine
    engine.close()


def test_profiles_live_in_one_file_in_the_data_folder(engine: DuckDBEngine) -> None:
    assert engine.dialect == "duckdb"
    assert engine.path.name == "profiles.duckdb"


def test_a_new_column_takes_values_stored_nested_in_extra_before_flattening(
    engine: DuckDBEngine,
) -> None:
    """Extras written before nested objects were flattened hold them nested: declaring one
    of their paths moves the value into its column, and reads never show the stale copy."""
    engine.upsert_profiles(WS, [("u1", {"age": 1}), ("u2", {"age": 2})])
    table = engine._workspaces[WS].table  # legacy rows: written as the engine once stored them
    legacy = '{"addr": {"city": "Paris", "zip": "75001"}, "k": 1}'
    engine._writer.execute(f"UPDATE {table} SET extra = ? WHERE external_id = 'u1'", [legacy])
    engine._writer.execute(
        f"UPDATE {table} SET extra = ? WHERE external_id = 'u2'", ['{"addr": {"city": 5}}']
    )
    assert engine.get_profile(WS, "u1").attributes == {  # type: ignore[union-attr]
        "addr.city": "Paris",
        "addr.zip": "75001",
        "k": 1,
        "age": 1,
    }
    engine.ensure_attributes(WS, {"addr.city": AttributeType.STRING})
    assert engine.select_pids(WS, "\"addr.city\" = 'Paris'") == BitMap([1])
    assert engine.get_profile(WS, "u1").attributes == {  # type: ignore[union-attr]
        "addr.city": "Paris",
        "addr.zip": "75001",
        "k": 1,
        "age": 1,
    }
    # A value that does not fit stays aside, hidden under the declared name.
    assert engine.get_profile(WS, "u2").attributes == {"age": 2}  # type: ignore[union-attr]
    engine.upsert_profiles(WS, [("u1", {"addr": {"city": "Lyon"}})])
    assert engine.get_profile(WS, "u1").attributes["addr.city"] == "Lyon"  # type: ignore[union-attr]


def test_a_table_left_without_its_sequence_gets_one_after_its_pids(tmp_path: Path) -> None:
    """A process killed between creating a workspace's table and its sequence (both are made
    in one transaction now) left a file no write could use: the sequence is made on load."""
    first = DuckDBEngine(tmp_path)
    first.upsert_profiles(WS, [("a", {}), ("b", {})])
    first.close()
    raw = duckdb.connect(str(tmp_path / "profiles.duckdb"))
    (sequence,) = raw.execute(
        "SELECT sequence_name FROM duckdb_sequences() WHERE sequence_name LIKE 'pids_%'"
    ).fetchone() or ("",)
    raw.execute(f'DROP SEQUENCE "{sequence}"')
    raw.close()

    engine = DuckDBEngine(tmp_path)
    try:
        (result,) = engine.upsert_profiles(WS, [("c", {})])
        assert result.created and result.pid == 3
        assert engine.pids_for(WS, ["a", "b", "c"]) == [1, 2, 3]
    finally:
        engine.close()


def test_the_events_table_is_the_contract_and_survives_a_reopen(
    engine: DuckDBEngine, tmp_path: Path
) -> None:
    engine.ensure_event_properties(WS, PROPERTIES)
    engine.write_events(WS, [_at(0, properties={"p_float": 2})])
    engine.close()
    con = duckdb.connect(str(tmp_path / "profiles.duckdb"))
    columns = con.execute(
        "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'events_acme'"
        " ORDER BY column_index"
    ).fetchall()
    con.close()
    assert columns[:5] == [
        ("pid", "UINTEGER"),
        ("event", "VARCHAR"),
        ("timestamp", "TIMESTAMP WITH TIME ZONE"),
        ("event_id", "VARCHAR"),
        ("received_at", "TIMESTAMP WITH TIME ZONE"),
    ]
    reopened = DuckDBEngine(tmp_path)
    try:
        assert reopened.event_properties(WS) == PROPERTIES
        pid = reopened.pids_for(WS, ["u1"])[0] or 0
        assert reopened.events_of(WS, [pid])[pid][0].properties == {"p_float": 2.0}
    finally:
        reopened.close()


def test_a_file_written_before_events_gets_its_events_table(tmp_path: Path) -> None:
    old = DuckDBEngine(tmp_path)
    old.ensure_attributes(WS, SCHEMA)
    old.upsert_profiles(WS, [("u1", {"age": 3})])
    old.close()
    con = duckdb.connect(str(tmp_path / "profiles.duckdb"))
    con.execute("DROP TABLE events_acme")
    con.close()
    engine = DuckDBEngine(tmp_path)
    try:
        [result] = engine.write_events(WS, [_at(0)])
        assert result.ok and result.pid == engine.pids_for(WS, ["u1"])[0]
        assert engine.get_profile(WS, "u1") is not None
    finally:
        engine.close()


class CollidingEngine(DuckDBEngine):
    """Every external id hashes alike, so every lookup takes the exact (ambiguous) path."""

    def _hashes(self, external_ids: list[str]) -> dict[str, int]:
        return dict.fromkeys(external_ids, 42)


def test_hash_collisions_fall_back_to_exact_lookups(tmp_path: Path) -> None:
    engine = CollidingEngine(tmp_path)
    engine.upsert_profiles(WS, [("a", {"n": 1}), ("b", {"n": 2})])
    engine.upsert_profiles(WS, [("b", {"m": 3}), ("c", {})])
    assert engine.pids_for(WS, ["a", "b", "c", "d"]) == [1, 2, 3, None]
    profile = engine.get_profile(WS, "b")
    assert profile is not None and profile.attributes == {"n": 2, "m": 3}
    assert engine.delete_profile(WS, "a") == 1
    assert engine.pids_for(WS, ["a", "b"]) == [None, 2]
    assert engine.count(WS) == 2
    engine.close()


def test_a_new_id_whose_hash_names_another_profile_leaves_that_profile_alone(
    tmp_path: Path,
) -> None:
    """The index names ``a``'s pid for ``b`` (one stored id per hash, so not ambiguous); the
    stored row is ``a``'s, so ``b`` is new and ``a`` is neither merged into nor deleted."""
    engine = CollidingEngine(tmp_path)
    engine.upsert_profiles(WS, [("a", {"n": 1})])
    (result,) = engine.upsert_profiles(WS, [("b", {"n": 2})])
    assert result.created and result.profile is not None
    assert result.profile.attributes == {"n": 2}
    kept = engine.get_profile(WS, "a")
    assert kept is not None and kept.attributes == {"n": 1}
    assert engine.count(WS) == 2
    engine.close()


def test_a_failed_event_append_raises_its_own_error_and_the_next_one_works(
    engine: DuckDBEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An append DuckDB refuses aborts the write's transaction: the caller sees the append's
    own error (not DuckDB refusing to unregister the batch's columns in the aborted
    transaction), nothing of the batch is stored, and the next write goes through."""
    from audiences.engines import duckdb_sql
    from audiences.engines.base import EventRecord

    at = datetime(2026, 1, 1, tzinfo=UTC)
    appending = duckdb_sql.append_events
    monkeypatch.setattr(
        duckdb_sql,
        "append_events",
        lambda table, source, schema: f"INSERT INTO {table} SELECT 1 / 0, * FROM {source}",
    )
    with pytest.raises(duckdb.Error) as refused:
        engine.write_events(WS, [EventRecord("u1", "bought", at, {})])
    assert not isinstance(refused.value, duckdb.TransactionException)
    assert engine.count(WS) == 0  # the profile the batch made went with it
    monkeypatch.setattr(duckdb_sql, "append_events", appending)
    [written] = engine.write_events(WS, [EventRecord("u1", "bought", at, {})])
    assert written.pid is not None
    page = engine.profile_events(WS, written.pid, limit=10)
    assert [stored.event.name for stored in page.events] == ["bought"]
