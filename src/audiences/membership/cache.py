"""An in-memory LRU cache of deserialized membership bitmaps, keyed by (audience id, version).

A version changes with every evaluation run, so a cached entry is never stale: it is simply no
longer asked for, and ages out. Entries are frozen so that no caller can change a shared bitmap.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

from pyroaring import AbstractBitMap, FrozenBitMap

from audiences.membership.bitmaps import frozen

CacheKey = tuple[Hashable, int]
"""(audience id, membership version)."""


class BitmapCache:
    """Least-recently-used bitmaps within a memory budget; safe to share between threads."""

    def __init__(self, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[CacheKey, FrozenBitMap] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        """Memory held by the cached bitmaps, as pyroaring reports it."""
        return self._bytes

    def get(self, key: CacheKey) -> FrozenBitMap | None:
        """The cached bitmap, marked as recently used, or None."""
        with self._lock:
            bitmap = self._entries.get(key)
            if bitmap is not None:
                self._entries.move_to_end(key)
            return bitmap

    def put(self, key: CacheKey, bitmap: AbstractBitMap) -> FrozenBitMap:
        """Cache a frozen copy (a bitmap over the budget is returned but not kept)."""
        entry = frozen(bitmap)
        size = sys.getsizeof(entry)
        with self._lock:
            self._drop(key)
            if size <= self.max_bytes:
                self._entries[key] = entry
                self._bytes += size
                self._evict()
        return entry

    def get_or_load(self, key: CacheKey, load: Callable[[], AbstractBitMap]) -> FrozenBitMap:
        """The cached bitmap, or ``load()``'s result once cached; ``load`` runs outside the lock."""
        cached = self.get(key)
        return cached if cached is not None else self.put(key, load())

    def discard(self, audience_id: Hashable) -> None:
        """Forget every version of one audience (after it is deleted)."""
        with self._lock:
            for key in [key for key in self._entries if key[0] == audience_id]:
                self._drop(key)

    def _drop(self, key: CacheKey) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= sys.getsizeof(old)

    def _evict(self) -> None:
        while self._bytes > self.max_bytes and self._entries:
            _, old = self._entries.popitem(last=False)
            self._bytes -= sys.getsizeof(old)
