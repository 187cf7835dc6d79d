"""The engine benchmark's workload: seeded synthetic profiles, their load and upsert batches,
members pages, and the timing helpers every engine's run shares.

Every engine sees the same data (one seeded generator); writes go through the engine's own
``upsert_profiles``, as the service writes.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from pyroaring import BitMap

from audiences.engines.base import ProfileEngine
from audiences.schemas.attributes import AttributeType

SCHEMA = {
    "country": AttributeType.STRING,
    "age": AttributeType.INTEGER,
    "plan": AttributeType.STRING,
    "tags": AttributeType.STRING_LIST,
    "lifetime_value": AttributeType.FLOAT,
    "signup_date": AttributeType.DATE,
    "last_seen": AttributeType.TIMESTAMP,
    "churned": AttributeType.BOOLEAN,
}
COUNTRIES = np.array(["US", "DE", "FR", "GB", "BR", "IN", "JP", "CA", "ES", "IT"])
PLANS = np.array(["free", "pro", "team", "enterprise"])
TAGS = ["vip", "beta", "newsletter", "churn-risk", "mobile", "web", "partner", "trial"]
NOW = datetime(2025, 1, 1, tzinfo=UTC)


def generate(count: int, seed: int) -> dict[str, Any]:
    """Columns of synthetic profiles, drawn from one seeded generator."""
    rng = np.random.default_rng(seed)
    tag_masks = rng.random((count, len(TAGS))) < np.linspace(0.04, 0.3, len(TAGS))
    return {
        "country": COUNTRIES[rng.choice(10, count, p=_weights(10))],
        "age": rng.integers(16, 86, count),
        "age_missing": rng.random(count) < 0.05,
        "plan": PLANS[rng.choice(4, count, p=[0.6, 0.25, 0.1, 0.05])],
        "tags": tag_masks,
        "lifetime_value": np.round(rng.lognormal(4.5, 1.3, count), 2),
        "signup_days": rng.integers(0, 7 * 365, count),
        "seen_minutes": rng.integers(0, 400 * 24 * 60, count),
        "churned": rng.random(count) < 0.2,
    }


def _weights(n: int) -> list[float]:
    raw = 1 / np.arange(1, n + 1)
    return list(raw / raw.sum())


def records(columns: dict[str, Any], start: int, stop: int) -> list[tuple[str, dict[str, Any]]]:
    """Profile records for rows ``start:stop`` of the generated columns."""
    cols = {key: value[start:stop].tolist() for key, value in columns.items()}
    out = []
    for i in range(stop - start):
        out.append(
            (
                f"user-{start + i}",
                {
                    "country": cols["country"][i],
                    "age": None if cols["age_missing"][i] else cols["age"][i],
                    "plan": cols["plan"][i],
                    "tags": [tag for tag, on in zip(TAGS, cols["tags"][i], strict=True) if on],
                    "lifetime_value": cols["lifetime_value"][i],
                    "signup_date": date(2018, 1, 1) + timedelta(days=cols["signup_days"][i]),
                    "last_seen": NOW - timedelta(minutes=cols["seen_minutes"][i]),
                    "churned": cols["churned"][i],
                },
            )
        )
    return out


def load(engine: ProfileEngine, ws: str, columns: dict[str, Any], count: int, batch: int) -> float:
    """Load every profile through ``upsert_profiles``; the rate in profiles per second."""
    started = time.perf_counter()
    for start in range(0, count, batch):
        results = engine.upsert_profiles(ws, records(columns, start, min(count, start + batch)))
        assert all(result.ok for result in results)
    return count / (time.perf_counter() - started)


def interleaved(repeat: int, runs: dict[str, Callable[[], Any]]) -> dict[str, tuple[float, Any]]:
    """The fastest of ``repeat`` rounds for each run, taking turns so drift hits all alike."""
    best: dict[str, tuple[float, Any]] = {}
    for _ in range(repeat):
        for label, run in runs.items():
            started = time.perf_counter()
            result = run()
            seconds = time.perf_counter() - started
            if label not in best or seconds < best[label][0]:
                best[label] = (seconds, result)
    return best


def upsert_batches(
    engine: ProfileEngine, ws: str, count: int, batches: int, seed: int
) -> list[float]:
    """Seconds per 1,000-record batch: 500 updates of random profiles and 500 new ones."""
    rng = np.random.default_rng(seed + 1)
    extra = generate(batches * 500, seed + 2)
    timings = []
    for n in range(batches):
        fresh = [(f"new-{n}-{eid}", attrs) for eid, attrs in records(extra, n * 500, n * 500 + 500)]
        updates = [
            (f"user-{i}", {"last_seen": NOW, "lifetime_value": float(i % 977), "seen": n})
            for i in rng.choice(count, 500, replace=False).tolist()
        ]
        started = time.perf_counter()
        results = engine.upsert_profiles(ws, fresh + updates)
        timings.append(time.perf_counter() - started)
        assert all(result.ok for result in results)
    return timings


def machine() -> str:
    """CPU model and core count, as the report asks for."""
    model = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, nproc={os.cpu_count()}, Python {platform.python_version()}"


def member_pages(
    engine: ProfileEngine, ws: str, members: BitMap, pages: int, size: int, seed: int
) -> list[float]:
    """Seconds per members page: the external ids of ``size`` pids from ``members`` at a
    random offset, as the members route reads a page (``external_ids_for``)."""
    rng = np.random.default_rng(seed + 3)
    timings = []
    for offset in rng.integers(0, max(len(members) - size, 1), pages).tolist():
        pids = list(members[offset : offset + size])
        started = time.perf_counter()
        ids = engine.external_ids_for(ws, pids)
        timings.append(time.perf_counter() - started)
        assert len(ids) == len(pids) and None not in ids
    return timings


def quantile(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def load_average() -> str:
    """The 1, 5 and 15 minute load averages (the machine may be shared)."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.1f}, {five:.1f}, {fifteen:.1f}"
