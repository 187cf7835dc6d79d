"""Synthetic, deterministic demo profiles: realistic enough that every demo audience has members."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

from audiences.schemas.enums import AttributeType

SCHEMA: dict[str, AttributeType] = {
    "country": AttributeType.STRING,
    "age": AttributeType.INTEGER,
    "plan": AttributeType.STRING,
    "tags": AttributeType.STRING_LIST,
    "lifetime_value": AttributeType.FLOAT,
    "signup_date": AttributeType.DATE,
    "last_seen": AttributeType.TIMESTAMP,
    "churned": AttributeType.BOOLEAN,
    "email": AttributeType.STRING,
}
COUNT = 100_000
"""Profiles ``serve --demo`` seeds unless told otherwise."""
COUNTRIES = ["US", "US", "US", "DE", "FR", "GB", "BR", "IN", "JP", "CA"]
PLANS = ["free", "free", "free", "pro", "pro", "team", "enterprise"]
TAGS = ["vip", "beta", "newsletter", "churn-risk", "mobile"]
DOMAINS = ["example.com", "acme.com", "mail.test", "corp.example"]


def profiles(
    count: int, *, seed: int = 7, anchor: datetime | None = None
) -> Iterator[tuple[str, dict[str, Any]]]:
    """``count`` profiles ``user-000001`` …, the same for the same seed and anchor time."""
    rng = random.Random(seed)
    now = anchor or datetime.now(UTC).replace(microsecond=0)
    for number in range(1, count + 1):
        external_id = f"user-{number:06d}"
        yield external_id, _profile(rng, external_id, now)


def _profile(rng: random.Random, external_id: str, now: datetime) -> dict[str, Any]:
    plan = rng.choice(PLANS)
    signup = date(2019, 1, 1) + timedelta(
        days=rng.randrange(0, (now.date() - date(2019, 1, 1)).days)
    )
    value = round(rng.lognormvariate(4.5, 1.2) * (3 if plan in ("team", "enterprise") else 1), 2)
    tags = sorted({tag for tag in TAGS if rng.random() < (0.08 if tag == "vip" else 0.2)})
    return {
        "country": rng.choice(COUNTRIES),
        "age": rng.randint(18, 80),
        "plan": plan,
        "tags": tags,
        "lifetime_value": value,
        "signup_date": signup,
        "last_seen": now - timedelta(minutes=rng.randrange(0, 120 * 24 * 60)),
        "churned": rng.random() < 0.15,
        "email": f"{external_id}@{rng.choice(DOMAINS)}",
    }
