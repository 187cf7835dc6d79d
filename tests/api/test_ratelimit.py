"""Rate limits shared through Redis, as several API processes would share them."""

from __future__ import annotations

import uuid

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from audiences.api.ratelimit import LocalWindows, RateLimiter
from audiences.errors import RateLimited
from tests.factories import Tenant, audience_body

REDIS_URL = "redis://127.0.0.1:6379"


@pytest.fixture
def redis_url() -> str:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.ConnectionError:
        pytest.skip("no Redis server on 127.0.0.1:6379")
    return REDIS_URL


def test_two_processes_share_one_window_through_redis(redis_url: str) -> None:
    first, second = RateLimiter("3/minute", redis_url), RateLimiter("3/minute", redis_url)
    key = f"key-{uuid.uuid4().hex}"
    assert first.hit(key)["RateLimit"].startswith('"default";r=2;')
    assert second.hit(key)["RateLimit"].startswith('"default";r=1;')
    first.hit(key)
    with pytest.raises(RateLimited) as refused:
        second.hit(key)
    assert int(refused.value.headers["Retry-After"]) >= 1
    assert (
        RateLimiter("3/minute", redis_url)
        .hit(f"other-{key}")["RateLimit"]
        .startswith('"default";r=2;')
    )


def test_memory_limiter_counts_per_key() -> None:
    limiter = RateLimiter("1/second")
    limiter.hit("a")
    limiter.hit("b")
    with pytest.raises(RateLimited):
        limiter.hit("a")


class FakeClock:
    """A monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.now = 960.0  # the start of a 60-second window

    def __call__(self) -> float:
        return self.now


def test_local_windows_weigh_the_last_window_by_its_overlap() -> None:
    clock = FakeClock()
    windows = LocalWindows(10, 60, clock)
    assert [windows.hit("k")[0] for _ in range(11)] == [True] * 10 + [False]
    assert windows.hit("k")[1] == 0
    clock.now += 60  # the next window: all ten still count, at a weight just under 1
    assert windows.hit("k")[0] is False
    clock.now += 30  # half-way: five of the ten count
    assert [windows.hit("k")[0] for _ in range(6)] == [True] * 5 + [False]
    clock.now += 120  # two windows later nothing counts
    allowed, remaining, reset = windows.hit("k")
    assert (allowed, remaining) == (True, 9)
    assert 0 < reset <= 60


@given(st.lists(st.floats(min_value=0, max_value=10), min_size=1, max_size=60))
def test_local_windows_never_allow_more_than_the_limit_in_any_window(gaps: list[float]) -> None:
    clock = FakeClock()
    windows = LocalWindows(5, 10, clock)
    allowed_at: list[float] = []
    for gap in gaps:
        clock.now += gap
        if windows.hit("k")[0]:
            allowed_at.append(clock.now)
    # The weighted previous window never under-counts the fixed window the hits fall in.
    for start in allowed_at:
        window = int(start // 10)
        assert sum(1 for t in allowed_at if int(t // 10) == window) <= 5


def test_a_request_counts_once_however_many_dependencies_ask_for_the_caller(
    tenant: Tenant,
) -> None:
    # A create asks for the caller twice (its role, and its Idempotency-Key claim).
    remaining = []
    for _ in range(3):
        created = tenant.write.post("/v1/audiences", json=audience_body())
        assert created.status_code == 201, created.text
        remaining.append(int(created.headers["RateLimit"].split("r=")[1].split(";")[0]))
    assert remaining[0] - remaining[1] == 1 and remaining[1] - remaining[2] == 1
