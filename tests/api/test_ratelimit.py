"""Rate limits shared through Redis, as several API processes would share them."""

from __future__ import annotations

import uuid

import pytest
import redis

from audiences.api.ratelimit import RateLimiter
from audiences.errors import RateLimited

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
