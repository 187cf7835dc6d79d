"""A server process hands the interpreter between threads more often than Python's default."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from audiences.kit.threads import SWITCH_INTERVAL_SECONDS, shorten_thread_switches


@pytest.fixture
def default_interval() -> Iterator[float]:
    before = sys.getswitchinterval()
    yield before
    sys.setswitchinterval(before)  # the rest of the test process keeps its own


def test_threads_switch_within_the_shorter_interval(default_interval: float) -> None:
    shorten_thread_switches()
    assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_SECONDS)
    assert sys.getswitchinterval() < default_interval
