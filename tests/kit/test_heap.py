"""Startup objects are frozen, and garbage made during start-up is collected, not frozen."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from audiences.kit.heap import freeze_startup_objects


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


@pytest.fixture
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()  # the rest of the test process keeps a normal collector


def test_live_objects_are_frozen_and_startup_garbage_is_collected(unfrozen: None) -> None:
    kept = _Node()
    cycle = _Node()
    cycle.other = _Node()
    cycle.other.other = cycle  # garbage only a collection can free
    gone = weakref.ref(cycle)
    del cycle
    frozen_before = gc.get_freeze_count()

    freeze_startup_objects()

    assert gone() is None
    assert gc.get_freeze_count() > frozen_before
    assert not any(obj is kept for obj in gc.get_objects())
