"""The hashes of stored event ids: lookups and growth (added hashes waiting apart until
merged), and DuckDB's duplicates found through them staying exact (a hash held only names a
candidate; an id stored is never missed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from audiences.engines.base import EventRecord
from audiences.engines.duckdb import DuckDBEngine
from audiences.engines.seen_ids import MERGE_SHARE, MIN_REBUILD, SeenIds

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SINCE = T0 - timedelta(days=7)


def hashes(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.uint64)


def test_held_answers_each_hash_and_add_merges() -> None:
    seen = SeenIds(SINCE, hashes(2**64 - 1, 10, 5))
    assert seen.held(hashes(10, 7, 2**64 - 1, 0)).tolist() == [True, False, True, False]
    seen.add(hashes(7, 3, 7))
    assert seen.held(hashes(3, 7, 5, 4)).tolist() == [True, True, True, False]
    assert len(seen) == 6


def test_an_empty_set_holds_nothing_until_added() -> None:
    seen = SeenIds(SINCE, hashes())
    assert seen.held(hashes(1, 2)).tolist() == [False, False]
    seen.add(hashes(2))
    assert seen.held(hashes(1, 2)).tolist() == [False, True]


def test_added_hashes_wait_apart_until_past_their_bound() -> None:
    seen = SeenIds(SINCE, hashes(1, 2, 3), merge_at=4)
    seen.add(hashes(13, 10))
    seen.add(hashes(12, 11))  # 4 added: at the bound, still apart
    assert (len(seen._hashes), len(seen._added)) == (3, 4)
    assert seen.held(hashes(3, 10, 13, 14)).tolist() == [True, True, True, False]
    seen.add(hashes(0))  # past it: merged into the sorted array
    assert (len(seen._hashes), len(seen._added)) == (8, 0)
    assert seen._hashes.tolist() == [0, 1, 2, 3, 10, 11, 12, 13]
    assert seen.held(hashes(0, 3, 10, 13, 14)).tolist() == [True, True, True, True, False]
    assert len(seen) == 8


def test_a_large_set_merges_past_a_share_of_its_size() -> None:
    built = np.arange(10 * MERGE_SHARE, dtype=np.uint64)
    seen = SeenIds(SINCE, built, merge_at=1)
    seen.add(np.arange(10, dtype=np.uint64) + 2**40)  # 10 = the share: still apart
    assert len(seen._added) == 10
    seen.add(hashes(2**41))
    assert (len(seen._hashes), len(seen._added)) == (len(built) + 11, 0)


# Few distinct values, the extremes among them: repeats, neighbours and the last slot are common.
values = st.one_of(st.integers(0, 40), st.integers(2**64 - 4, 2**64 - 1))


@given(
    built=st.lists(values, max_size=30),
    batches=st.lists(st.lists(values, max_size=8), max_size=12),
    probes=st.lists(values, max_size=20),
    merge_at=st.integers(0, 12),
)
def test_it_answers_as_a_set_of_all_it_was_given(
    built: list[int], batches: list[list[int]], probes: list[int], merge_at: int
) -> None:
    seen = SeenIds(SINCE, np.array(built, dtype=np.uint64), merge_at=merge_at)
    oracle = set(built)
    for batch in batches:
        seen.add(np.array(batch, dtype=np.uint64))
        oracle.update(batch)
        asked = [*probes, *batch]
        found = seen.held(np.array(asked, dtype=np.uint64)).tolist()
        assert found == [value in oracle for value in asked]
    assert len(seen) == len(built) + sum(map(len, batches))


def test_it_is_stale_past_twice_its_built_size() -> None:
    built = np.arange(MIN_REBUILD, dtype=np.uint64)
    seen = SeenIds(SINCE, built)
    seen.add(built)  # held twice: still within twice the size
    assert not seen.stale()
    seen.add(hashes(7))
    assert seen.stale()


def _event(external_id: str, event_id: str, minute: int = 0) -> EventRecord:
    return EventRecord(external_id, "order", T0 + timedelta(minutes=minute), {}, event_id)


def _duplicates(engine: DuckDBEngine, records: list[EventRecord], since: datetime) -> list[bool]:
    results = engine.write_events("ws", records, received_at=T0, dedupe_since=since)
    assert all(result.ok for result in results)
    return [result.duplicate for result in results]


def test_a_held_hash_of_an_id_no_longer_stored_is_written_again(tmp_path: Path) -> None:
    engine = DuckDBEngine(tmp_path)
    assert _duplicates(engine, [_event("u1", "a"), _event("u2", "b")], SINCE) == [False, False]
    assert _duplicates(engine, [_event("u2", "b", 1), _event("u2", "b", 2)], SINCE) == [True, True]
    engine.delete_profile("ws", "u1")  # its event "a" goes; the hash of "a" stays held
    assert _duplicates(engine, [_event("u1", "a", 3), _event("u2", "b", 3)], SINCE) == [
        False,
        True,
    ]
    assert _duplicates(engine, [_event("u1", "a", 4)], SINCE) == [True]
    engine.close()


def test_an_earlier_window_than_the_set_holds_reads_the_ids_again(tmp_path: Path) -> None:
    engine = DuckDBEngine(tmp_path)
    early = "early-\u00e4\U0001f600"  # hashed from the stored column as from Python's text
    # Stored without a window, received a day before the window the set is then built for.
    engine.write_events("ws", [_event("u1", early)], received_at=T0 - timedelta(days=8))
    assert _duplicates(engine, [_event("u1", "late")], SINCE) == [False]  # the set is built
    wider = T0 - timedelta(days=30)
    assert _duplicates(engine, [_event("u1", early, 2), _event("u1", "late", 2)], wider) == [
        True,
        True,
    ]
    engine.close()


def test_ids_moved_in_are_found_afterwards(tmp_path: Path) -> None:
    source, target = DuckDBEngine(tmp_path / "a"), DuckDBEngine(tmp_path / "b")
    source.write_events("ws", [_event("u0", "first"), _event("u1", "moved")], received_at=T0)
    # The target holds the first event (a move cut short after it), and builds its set.
    assert _duplicates(target, [_event("u0", "first")], SINCE) == [False]
    events, _ = source.export_events("ws", after=None, limit=10)
    assert target.import_events("ws", events, after=None) == 1
    assert _duplicates(target, [_event("u1", "moved", 1), _event("u0", "first", 1)], SINCE) == [
        True,
        True,
    ]
    source.close()
    target.close()
