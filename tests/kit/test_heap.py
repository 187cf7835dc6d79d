"""Startup objects are frozen, garbage made during start-up is collected, not frozen, and the
young generation is collected less often."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from audiences.kit.heap import YOUNG_THRESHOLD, freeze_startup_objects


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


@pytest.fixture
def unfrozen() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()  # the rest of the test process keeps a normal collector
    gc.set_threshold(*thresholds)


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


def test_the_young_generation_is_collected_less_often(unfrozen: None) -> None:
    _, middle, old = gc.get_threshold()
    freeze_startup_objects()
    assert gc.get_threshold() == (YOUNG_THRESHOLD, middle, old)
