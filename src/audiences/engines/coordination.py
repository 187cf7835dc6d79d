"""What several processes writing one profile engine agree through, when the engine cannot.

ClickHouse has neither sequences nor transactions: one process alone can number new profiles
and merge writes into stored rows under a lock of its own. A :class:`WriteCoordinator` lifts
that limit: a store every process already shares (the metadata database, ``store``) holds each
workspace's write lock, its pid high-water mark and its row version, and the engine takes them
from there. The engine receives one from whoever opens it (``services.runtime``); without one,
it keeps all three in its own process.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Protocol


class WriteCoordinator(Protocol):
    """A workspace's write lock, pids and row versions, shared by every process that writes."""

    def exclusive(self, workspace_id: str) -> AbstractContextManager[Callable[[], None]]:
        """Hold the workspace's write lock, across processes, for the block (released when the
        block ends, or when the holder's connection is lost); fail after a bounded wait. The
        block gets a check that raises if the lock was lost: the engine calls it before each
        write it sends."""
        ...

    def reserve_pids(self, workspace_id: str, count: int, *, above: int) -> int:
        """The first of ``count`` consecutive pids no process got before, all above ``above``
        (a floor: the pids the engine already holds); recorded before it returns, so a crash
        after it never gives them out again. ``count`` 0 only raises the floor."""
        ...

    def next_version(self, workspace_id: str, *, at_least: int) -> int:
        """A row version above every one given for the workspace, and at least ``at_least``
        (the caller's clock): a later write always wins, whatever the writers' clocks say."""
        ...
