"""Synthetic, deterministic demo events: what the demo profiles did over the last 180 days.

Each profile signs up once (some after looking at the prices), then browses (page views, pricing
views, product views), fills carts and orders with amounts, at a pace of its own: a few are very
busy, many are quiet, and some stopped coming a while ago, so that every demo behavioural audience
has members.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from audiences.engines.base import EventRecord
from audiences.schemas.attributes import AttributeType

DAYS = 180
PROPERTIES: dict[str, AttributeType] = {
    "page": AttributeType.STRING,
    "sku": AttributeType.STRING,
    "amount": AttributeType.FLOAT,
    "channel": AttributeType.STRING,
}
PAGES = ["/", "/docs", "/blog", "/product", "/changelog"]
CHANNELS = ["web", "web", "email", "ads", "social"]
SKUS = [f"sku-{n:03d}" for n in range(200)]
LAST_VISIT = timedelta(minutes=15)
"""How long before the anchor time the last visit may start (a visit lasts at most 6 minutes)."""
BROWSING = [  # what a visit holds besides page views, with its chance
    ("pricing_viewed", 0.15),
    ("product_viewed", 0.6),
    ("add_to_cart", 0.25),
    ("order", 0.12),
]


def events(count: int, *, seed: int = 11, anchor: datetime | None = None) -> Iterator[EventRecord]:
    """The events of profiles ``user-000001`` … ``user-<count>``, oldest first per profile; the
    same for the same seed and anchor time (about 21 events a profile on average)."""
    rng = random.Random(seed)
    now = anchor or datetime.now(UTC).replace(microsecond=0)
    for number in range(1, count + 1):
        yield from _history(rng, f"user-{number:06d}", now)


def _history(rng: random.Random, profile_id: str, anchor: datetime) -> Iterator[EventRecord]:
    # A visit lasts minutes after its first event, and none may lie after the anchor (a write
    # refuses events from the future): visits start before the last quarter of an hour.
    now = anchor - LAST_VISIT
    start = now - timedelta(days=rng.uniform(0, DAYS))
    # Stopped coming: the last visit is long ago for about a fifth of the profiles.
    end = now - timedelta(days=rng.uniform(30, 120)) if rng.random() < 0.2 else now
    channel = rng.choice(CHANNELS)
    if rng.random() < 0.3:  # looked at the prices first, some days before signing up
        looked = start - timedelta(days=rng.uniform(0.1, 12))
        yield EventRecord(profile_id, "page_view", looked, {"page": "/", "channel": channel})
        yield EventRecord(
            profile_id, "pricing_viewed", looked + timedelta(seconds=30), {"page": "/pricing"}
        )
    yield EventRecord(profile_id, "signed_up", start, {"channel": channel})
    visits = max(1, int(rng.expovariate(1 / 10)))
    span = max((end - start).total_seconds(), 60.0)
    moments = sorted(start + timedelta(seconds=rng.uniform(0, span)) for _ in range(visits))
    for moment in moments:
        yield from _visit(rng, profile_id, moment, rng.choice(CHANNELS))


def _visit(
    rng: random.Random, profile_id: str, at: datetime, channel: str
) -> Iterator[EventRecord]:
    step = timedelta(seconds=rng.randint(5, 90))
    yield EventRecord(profile_id, "page_view", at, {"page": rng.choice(PAGES), "channel": channel})
    sku = rng.choice(SKUS)
    for name, chance in BROWSING:
        if rng.random() >= chance:
            continue
        at += step
        if name == "pricing_viewed":
            yield EventRecord(profile_id, name, at, {"page": "/pricing", "channel": channel})
        elif name == "order":
            amount = round(rng.lognormvariate(3.8, 0.9), 2)
            yield EventRecord(
                profile_id, name, at, {"sku": sku, "amount": amount, "channel": channel}
            )
        else:
            yield EventRecord(profile_id, name, at, {"sku": sku, "channel": channel})
