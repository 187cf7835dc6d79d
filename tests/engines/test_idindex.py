"""The hash to pid index: lookups, ambiguity, removal and compaction."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from audiences.engines.duckdb import DuckDBEngine
from audiences.engines.idfiles import IdFile
from audiences.engines.idindex import ABSENT, AMBIGUOUS, IdIndex, sorted_order


def make(pairs: dict[int, int]) -> IdIndex:
    hashes = np.array(list(pairs), dtype=np.uint64)
    return IdIndex(hashes, np.array(list(pairs.values()), dtype=np.int64))


def test_lookup_answers_pids_and_absent() -> None:
    index = make({2**64 - 1: 3, 10: 1, 5: 2})
    assert index.lookup([10, 5, 2**64 - 1, 7]) == [1, 2, 3, ABSENT]
    assert len(index) == 3


def test_an_empty_index_knows_nothing() -> None:
    index = make({})
    assert index.lookup([1, 2]) == [ABSENT, ABSENT]
    index.add_many([1], [9])
    assert index.lookup([1]) == [9]


def test_sorted_order_sorts_hashes_sharing_a_high_half_by_the_whole_hash() -> None:
    rng = np.random.default_rng(7)
    hashes = rng.integers(0, 2**64 - 1, 5_000, dtype=np.uint64, endpoint=True)
    high = np.uint64(0xDEAD_BEEF) << np.uint64(32)
    shared = high | rng.integers(0, 2**32, 50, dtype=np.uint64)  # one high half, 50 lows
    hashes = np.concatenate([hashes, shared, shared[:5], [high, high | np.uint64(2**32 - 1)]])
    rng.shuffle(hashes)
    order = sorted_order(hashes)
    assert sorted(order.tolist()) == list(range(len(hashes)))
    assert hashes[order].tolist() == sorted(hashes.tolist())


def test_shared_hashes_are_ambiguous() -> None:
    index = IdIndex(np.array([7, 7, 8], dtype=np.uint64), np.array([1, 2, 3], dtype=np.int64))
    assert index.lookup([7, 8]) == [AMBIGUOUS, 3]
    index.add_many([8], [4])
    assert index.lookup([8]) == [AMBIGUOUS]


def test_one_batch_sharing_a_hash_is_ambiguous() -> None:
    index = make({})
    index.add_many([5, 5, 6], [1, 2, 3])
    assert index.lookup([5, 6]) == [AMBIGUOUS, 3]


def test_re_adding_the_same_pair_is_harmless() -> None:
    index = make({1: 1})
    index.add_many([1], [1])
    assert index.lookup([1]) == [1]


def test_remove_then_add_again() -> None:
    index = make({1: 1, 2: 2})
    index.add_many([3], [3])
    index.remove(1, 1)
    index.remove(3, 3)
    assert index.lookup([1, 2, 3]) == [ABSENT, 2, ABSENT]
    index.add_many([1], [4])
    assert index.lookup([1]) == [4]
    assert len(index) == 2


def test_compaction_keeps_every_entry() -> None:
    index = make({n * 2: n + 1 for n in range(1000)})
    index.remove(0, 1)
    added = {n * 2 + 1: 5000 + n for n in range(70_000)}
    index.add_many(list(added), list(added.values()))
    keys = [0, 2, 1998, *list(added)[::997]]
    assert index.lookup(keys) == [ABSENT, 2, 1000, *list(added.values())[::997]]
    assert len(index) == 999 + 70_000


def test_a_bulk_goes_into_the_sorted_base_and_clashes_turn_ambiguous() -> None:
    index = make({10: 1, 20: 2})
    index.add_many([30], [3])
    bulk = np.array([40, 10, 30, 50, 50, 60], dtype=np.uint64)
    index.add_arrays(bulk, np.array([4, 5, 6, 7, 8, 9], dtype=np.int64))
    assert index.lookup([40, 60, 20]) == [4, 9, 2]
    assert index.lookup([10, 30, 50]) == [AMBIGUOUS] * 3
    assert len(index._recent) == 1  # the bulk left no dict behind
    index.remove(60, 9)
    assert index.lookup([60]) == [ABSENT]


def test_the_engine_teaches_a_loaded_index_the_profiles_an_import_created(
    tmp_path: Path,
) -> None:
    engine = DuckDBEngine(tmp_path)
    try:
        engine.ensure_profiles("ws", ["a"])  # loads the index
        path = tmp_path / "ids.csv"
        path.write_text("id\na\nb\nc\n")
        source = IdFile(path, ",", 1, 0, header=True, gzip=False)
        staged = engine.stage_id_file("ws", source)
        try:
            made = staged.resolve(0, staged.records, [])
        finally:
            staged.close()
        assert len(set(made.tolist())) == 3
        assert sorted(p for p in engine.pids_for("ws", ["a", "b", "c"]) if p) == sorted(
            set(made.tolist())
        )
        assert engine.get_profile("ws", "c") is not None
    finally:
        engine.close()
