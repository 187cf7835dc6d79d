"""Per-key rate limits with the ``limits`` library, reported in the IETF RateLimit headers."""

from __future__ import annotations

import math
import time

from limits import parse
from limits.storage import storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter

from audiences.errors import RateLimited


class RateLimiter:
    """Counts requests per key in a sliding window; raises :class:`RateLimited` past the limit.

    The sliding window counter keeps two counters per key (this window and the last, weighted),
    so a hit costs the same at any traffic; a moving window keeps one entry per request.
    """

    def __init__(self, rate: str, storage_uri: str = "memory://") -> None:
        self.item = parse(rate)
        self.limiter = SlidingWindowCounterRateLimiter(storage_from_string(storage_uri))
        self.policy = f'"default";q={self.item.amount};w={self.item.get_expiry()}'
        self.in_process = storage_uri.startswith("memory://")
        """True when counting never waits on the network (it may run on the event loop)."""

    def hit(self, key: str) -> dict[str, str]:
        """Count one request for ``key``; the headers that tell the client where it stands."""
        allowed = self.limiter.hit(self.item, key)
        stats = self.limiter.get_window_stats(self.item, key)
        reset = max(0, math.ceil(stats.reset_time - time.time()))
        headers = {
            "RateLimit-Policy": self.policy,
            "RateLimit": f'"default";r={stats.remaining};t={reset}',
        }
        if not allowed:
            raise RateLimited(
                f"rate limit of {self.item.amount} requests per {self.item.get_expiry()} s "
                f"exceeded; retry in {max(reset, 1)} s",
                headers={**headers, "Retry-After": str(max(reset, 1))},
            )
        return headers
