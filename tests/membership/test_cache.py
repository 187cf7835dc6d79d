"""The LRU cache of membership bitmaps."""

from __future__ import annotations

import sys

from pyroaring import BitMap, FrozenBitMap

from audiences.membership.cache import BitmapCache


def test_get_put_and_frozen_entries() -> None:
    cache = BitmapCache()
    source = BitMap([1, 2, 3])
    stored = cache.put(("aud", 1), source)
    source.add(4)
    assert isinstance(stored, FrozenBitMap)
    assert cache.get(("aud", 1)) == BitMap([1, 2, 3])
    assert cache.get(("aud", 2)) is None


def test_least_recently_used_is_evicted_first() -> None:
    one = BitMap(range(0, 100_000, 3))
    size = sys.getsizeof(FrozenBitMap(one))
    cache = BitmapCache(max_bytes=size * 2)
    cache.put(("a", 1), one)
    cache.put(("b", 1), one)
    assert cache.get(("a", 1)) is not None
    cache.put(("c", 1), one)
    assert cache.get(("b", 1)) is None
    assert cache.get(("a", 1)) is not None and cache.get(("c", 1)) is not None
    assert cache.size_bytes == 2 * size and len(cache) == 2


def test_a_bitmap_over_the_budget_is_returned_but_not_kept() -> None:
    cache = BitmapCache(max_bytes=10)
    assert cache.put(("a", 1), BitMap(range(0, 100_000, 7))) is not None
    assert len(cache) == 0 and cache.size_bytes == 0


def test_get_or_load_loads_once() -> None:
    cache = BitmapCache()
    calls: list[int] = []

    def load() -> BitMap:
        calls.append(1)
        return BitMap([7])

    assert cache.get_or_load(("a", 3), load) == BitMap([7])
    assert cache.get_or_load(("a", 3), load) == BitMap([7])
    assert calls == [1]


def test_discard_forgets_every_version() -> None:
    cache = BitmapCache()
    cache.put(("a", 1), BitMap([1]))
    cache.put(("a", 2), BitMap([2]))
    cache.put(("b", 1), BitMap([3]))
    cache.discard("a")
    assert len(cache) == 1 and cache.get(("b", 1)) == BitMap([3])
    assert cache.size_bytes == sys.getsizeof(FrozenBitMap([3]))
