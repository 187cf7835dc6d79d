"""The 64-bit hashes of the event ids a workspace's events table holds, to find duplicates
without scanning the table.

A batch's ids are checked against the ids received within the dedupe window. On DuckDB that is
a scan of the window's ``event_id`` strings (for 9,000 ids among 350,000 received in a 7-day
window: 25 ms of CPU, most of it decompressing the strings); looking their hashes up in a sorted
array takes about 2. The set is a superset: it holds a hash for every id stored since
:attr:`SeenIds.since`, and may hold more (ids stored before, ids deleted since, other ids of
the same hash). So a hash it lacks is an id surely not stored, and a hash it holds only names
a candidate, which the caller confirms in SQL: the answer stays exact.

Not thread-safe by itself: the engine guards it with its write lock.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import numpy.typing as npt

HashArray = npt.NDArray[np.uint64]

MAX_HELD = 16_000_000
"""The most hashes kept (128 MB); a window holding more is looked up by the scan."""

MIN_REBUILD = 1_000_000
"""Hashes added before a rebuild is ever due, whatever the size at the build."""

MERGE_AT = 65_536
"""Hashes added (at least) before they are merged into the sorted array: until then they wait
in a small sorted array of their own, so that a write copies that one, not the whole set (3 MB
at 350,000 hashes, 128 MB at :data:`MAX_HELD`)."""

MERGE_SHARE = 64
"""Past ``1/MERGE_SHARE`` of the sorted array (when that is more than :data:`MERGE_AT`), the
added hashes are merged: a merge copies the whole set, so a large set merges less often."""


class SeenIds:
    """A sorted array of hashes: those of the ids received since ``since`` when it was built,
    and every one added since (the latest in a second, smaller sorted array until merged)."""

    def __init__(self, since: datetime, hashes: HashArray, *, merge_at: int = MERGE_AT) -> None:
        self.since = since
        self._hashes = np.sort(np.asarray(hashes, dtype=np.uint64))
        self._added: HashArray = np.empty(0, dtype=np.uint64)
        self._merge_at = merge_at
        self._built = len(self._hashes)

    def __len__(self) -> int:
        return len(self._hashes) + len(self._added)

    def held(self, hashes: HashArray) -> npt.NDArray[np.bool_]:
        """Whether each hash is held (its id may be stored) or not (it surely is not)."""
        found = _held_in(self._hashes, hashes)
        if len(self._added):
            found |= _held_in(self._added, hashes)
        return found

    def add(self, hashes: HashArray) -> None:
        """Hold ``hashes`` too (those of ids just stored): merged into the added ones, which
        are merged into the sorted array once they pass their bound."""
        self._added = _merged(self._added, np.asarray(hashes, dtype=np.uint64))
        if len(self._added) > max(self._merge_at, len(self._hashes) // MERGE_SHARE):
            self._hashes = _merged(self._hashes, self._added)
            self._added = np.empty(0, dtype=np.uint64)

    def stale(self) -> bool:
        """Whether to build it again: it grew past twice its size at the build (a new build
        drops the hashes of ids received before the window, and of ids deleted), or past
        :data:`MAX_HELD`."""
        return len(self) > max(2 * self._built, MIN_REBUILD) or len(self) > MAX_HELD


def _held_in(held: HashArray, hashes: HashArray) -> npt.NDArray[np.bool_]:
    """Whether each of ``hashes`` is in the sorted array ``held``."""
    if not len(held):
        return np.zeros(len(hashes), dtype=bool)
    at = np.minimum(np.searchsorted(held, hashes), len(held) - 1)
    return np.asarray(held[at] == hashes)


def _merged(held: HashArray, hashes: HashArray) -> HashArray:
    """The sorted array ``held`` with ``hashes`` put in, in O(n + k log k)."""
    added = np.sort(hashes)
    return np.insert(held, np.searchsorted(held, added), added)
