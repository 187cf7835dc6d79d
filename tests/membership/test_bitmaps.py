"""Bitmap storage form, diffs and paging, with properties checked by hypothesis."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from pyroaring import BitMap, FrozenBitMap

from audiences.membership.bitmaps import (
    MAX_PID,
    deserialize,
    diff,
    from_numpy,
    frozen,
    page,
    page_at,
    serialize,
    to_numpy,
)

pids = st.lists(st.integers(min_value=0, max_value=MAX_PID), max_size=300)
dense = st.lists(st.integers(min_value=0, max_value=5000), max_size=600)


@given(pids)
def test_serialize_round_trips(values: list[int]) -> None:
    bitmap = BitMap(values)
    data = serialize(bitmap)
    assert isinstance(data, bytes)
    assert deserialize(data) == bitmap


def test_serialize_runs_compactly() -> None:
    bitmap = BitMap(range(1_000_000))
    assert len(serialize(bitmap)) < 1000  # 16 run containers, not 125 KB of bits
    assert deserialize(serialize(bitmap)) == bitmap


def test_numpy_round_trip() -> None:
    array = np.array([9, 3, 3, 2**32 - 1, 0], dtype=np.int64)
    bitmap = from_numpy(array)
    assert list(bitmap) == [0, 3, 9, 2**32 - 1]
    assert to_numpy(bitmap).tolist() == [0, 3, 9, 2**32 - 1]
    assert to_numpy(bitmap).dtype == np.uint32
    assert len(from_numpy(np.array([], dtype=np.uint32))) == 0


@given(dense, dense)
def test_diff_entered_and_exited(old_values: list[int], new_values: list[int]) -> None:
    old, new = BitMap(old_values), BitMap(new_values)
    entered, exited = diff(old, new)
    assert set(entered) == set(new_values) - set(old_values)
    assert set(exited) == set(old_values) - set(new_values)
    assert (old - exited) | entered == new


@given(dense, st.integers(min_value=1, max_value=700))
def test_concatenated_pages_are_the_sorted_bitmap(values: list[int], limit: int) -> None:
    bitmap = BitMap(values)
    seen: list[int] = []
    after: int | None = None
    while chunk := page(bitmap, after, limit):
        assert len(chunk) <= limit
        seen += chunk
        after = chunk[-1]
    assert seen == sorted(set(values))
    assert len(seen) == len(set(seen))


@given(dense, st.integers(min_value=-5, max_value=6000), st.integers(min_value=0, max_value=50))
def test_a_page_starts_strictly_after_the_cursor(values: list[int], after: int, limit: int) -> None:
    expected = [v for v in sorted(set(values)) if v > after][:limit]
    assert page(BitMap(values), after, limit) == expected


def test_page_edges() -> None:
    bitmap = BitMap([1, 5, MAX_PID])
    assert page(bitmap, None, 2) == [1, 5]
    assert page(bitmap, 5, 10) == [MAX_PID]
    assert page(bitmap, MAX_PID, 10) == []
    assert page(bitmap, 2**40, 10) == []
    assert page(bitmap, None, 0) == []
    assert page(BitMap(), None, 10) == []


@given(dense, st.integers(min_value=0, max_value=700), st.integers(min_value=0, max_value=50))
def test_page_at_offset(values: list[int], offset: int, limit: int) -> None:
    assert page_at(BitMap(values), offset, limit) == sorted(set(values))[offset : offset + limit]


def test_frozen_copies_once() -> None:
    bitmap = BitMap([1, 2])
    copy = frozen(bitmap)
    bitmap.add(3)
    assert isinstance(copy, FrozenBitMap) and list(copy) == [1, 2]
    assert frozen(copy) is copy
