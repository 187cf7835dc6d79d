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


class SeenIds:
    """A sorted array of hashes: those of the ids received since ``since`` when it was built,
    and every one added since."""

    def __init__(self, since: datetime, hashes: HashArray) -> None:
        self.since = since
        self._hashes = np.sort(np.asarray(hashes, dtype=np.uint64))
        self._built = len(self._hashes)

    def __len__(self) -> int:
        return len(self._hashes)

    def held(self, hashes: HashArray) -> npt.NDArray[np.bool_]:
        """Whether each hash is held (its id may be stored) or not (it surely is not)."""
        if not len(self._hashes):
            return np.zeros(len(hashes), dtype=bool)
        at = np.minimum(np.searchsorted(self._hashes, hashes), len(self._hashes) - 1)
        return np.asarray(self._hashes[at] == hashes)

    def add(self, hashes: HashArray) -> None:
        """Hold ``hashes`` too (those of ids just stored), merged in O(n + k log k)."""
        added = np.sort(np.asarray(hashes, dtype=np.uint64))
        self._hashes = np.insert(self._hashes, np.searchsorted(self._hashes, added), added)

    def stale(self) -> bool:
        """Whether to build it again: it grew past twice its size at the build (a new build
        drops the hashes of ids received before the window, and of ids deleted), or past
        :data:`MAX_HELD`."""
        return len(self._hashes) > max(2 * self._built, MIN_REBUILD) or (
            len(self._hashes) > MAX_HELD
        )
