"""Roaring bitmaps of pids: the storage form of a membership, diffs between runs, and paging.

Bitmaps are stored in the portable Roaring format, which any Roaring library (Java, Go, C, Rust)
reads, so a membership BLOB in the metadata database is not tied to pyroaring.
"""

from __future__ import annotations

import array
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from pyroaring import AbstractBitMap, BitMap, FrozenBitMap

_UINT32 = "I" if array.array("I").itemsize == 4 else "L"

MAX_PID = 2**32 - 1
"""The largest pid a 32-bit Roaring bitmap holds."""


class Diff(NamedTuple):
    """Who entered and who exited between two memberships of one audience."""

    entered: BitMap
    exited: BitMap


def serialize(bitmap: AbstractBitMap) -> bytes:
    """The portable Roaring bytes of a bitmap, run-length encoded where that is smaller."""
    compact = BitMap(bitmap)
    compact.run_optimize()
    return compact.serialize()


def deserialize(data: bytes) -> BitMap:
    """A bitmap from portable Roaring bytes, as written by ``serialize``."""
    return BitMap.deserialize(data)


def from_numpy(pids: npt.ArrayLike) -> BitMap:
    """A bitmap from an array of pids, added as one contiguous uint32 buffer.

    pyroaring adds an ``array.array`` in one call; building from numpy integers one at a time is
    about eight times slower.
    """
    buffer = np.ascontiguousarray(pids, dtype=np.uint32)
    return BitMap(array.array(_UINT32, buffer.tobytes()))


def to_numpy(bitmap: AbstractBitMap) -> npt.NDArray[np.uint32]:
    """The pids of a bitmap, ascending, as a uint32 array (no per-element conversion)."""
    return np.frombuffer(bitmap.to_array(), dtype=np.uint32)


def diff(old: AbstractBitMap, new: AbstractBitMap) -> Diff:
    """Members of ``new`` not in ``old`` (entered) and of ``old`` not in ``new`` (exited)."""
    return Diff(entered=BitMap(new - old), exited=BitMap(old - new))


def page(bitmap: AbstractBitMap, after: int | None, limit: int) -> list[int]:
    """Up to ``limit`` pids in ascending order, strictly greater than ``after`` (None: the start).

    ``rank`` finds the cursor's position in O(log n) and the slice selects from there, so a page
    deep inside a 5M-member bitmap costs the same as the first one.
    """
    if limit <= 0 or (after is not None and after > MAX_PID):
        return []
    start = bitmap.rank(after) if after is not None and after >= 0 else 0
    return list(bitmap[start : start + limit])


def page_at(bitmap: AbstractBitMap, offset: int, limit: int) -> list[int]:
    """Up to ``limit`` pids in ascending order from position ``offset``, for offset paging."""
    if limit <= 0 or offset < 0:
        return []
    return list(bitmap[offset : offset + limit])


def frozen(bitmap: AbstractBitMap) -> FrozenBitMap:
    """An immutable copy, safe to share between threads and cache entries."""
    return bitmap if isinstance(bitmap, FrozenBitMap) else FrozenBitMap(bitmap)
