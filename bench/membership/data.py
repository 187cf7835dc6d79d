"""Synthetic profiles for the membership benchmark: bulk-loaded in SQL, upserted as records.

The bulk path writes straight into the engine's table with one ``INSERT ... SELECT`` per million
rows, drawing every value from ``hash(row, salt)`` so that a run is reproducible; pids come from
the workspace's own sequence, so later upserts through the engine continue after them. It exists
only here, in the benchmark: ``upsert_profiles`` (measured beside it) is the product's path.
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from typing import Any

from audiences.engines.duckdb import DuckDBEngine
from audiences.schemas.attributes import AttributeType

SCHEMA: dict[str, AttributeType] = {
    "country": AttributeType.STRING,
    "age": AttributeType.INTEGER,
    "plan": AttributeType.STRING,
    "tags": AttributeType.STRING_LIST,
    "lifetime_value": AttributeType.FLOAT,
    "signup_date": AttributeType.DATE,
    "last_seen": AttributeType.TIMESTAMP,
    "churned": AttributeType.BOOLEAN,
}
COUNTRIES = ["US", "US", "US", "DE", "FR", "GB", "BR", "IN", "JP", "CA", "ES", "IT"]
PLANS = ["free"] * 12 + ["pro"] * 5 + ["team"] * 2 + ["enterprise"]
TAGS = ["vip", "beta", "newsletter", "churn-risk", "mobile", "web", "partner", "trial"]
TAG_PER_MILLE = [40, 77, 114, 151, 189, 226, 263, 300]
NOW = datetime(2025, 1, 1, tzinfo=UTC)
SEEN_MINUTES = 400 * 24 * 60
SIGNUP_DAYS = 7 * 365


def _sql_list(values: list[str]) -> str:
    return "[" + ", ".join(f"'{value}'" for value in values) + "]"


def bulk_sql(table: str, sequence: str, start: int, stop: int) -> str:
    """One INSERT of profiles ``user-<start>`` .. ``user-<stop - 1>``, every value from hashes."""
    tags = _sql_list(TAGS)
    per_mille = "[" + ", ".join(map(str, TAG_PER_MILLE)) + "]"
    return f"""
INSERT INTO {table} (pid, external_id, extra, updated_at, country, age, plan, tags,
                     lifetime_value, signup_date, last_seen, churned)
SELECT nextval('{sequence.strip('"')}'), 'user-' || i, NULL, TIMESTAMPTZ '2025-01-01 00:00:00+00',
  {_sql_list(COUNTRIES)}[1 + (hash(i, 1) % {len(COUNTRIES)})::INTEGER],
  CASE WHEN hash(i, 2) % 20 = 0 THEN NULL ELSE 16 + ((hash(i, 2) // 20) % 70)::BIGINT END,
  {_sql_list(PLANS)}[1 + (hash(i, 3) % {len(PLANS)})::INTEGER],
  list_filter({tags}, lambda t, j: hash(i, 10 + j) % 1000 < {per_mille}[j]),
  round(exp(4.5 + 1.3 * sqrt(-2 * ln((hash(i, 4) % 1000000 + 1) / 1000001.0))
            * cos(2 * pi() * (hash(i, 5) % 1000000) / 1000000.0)), 2),
  DATE '2018-01-01' + (hash(i, 6) % {SIGNUP_DAYS})::INTEGER,
  TIMESTAMPTZ '2025-01-01 00:00:00+00' - to_minutes((hash(i, 7) % {SEEN_MINUTES})::BIGINT),
  hash(i, 8) % 5 = 0
FROM range({start}, {stop}) r(i)
"""


def bulk_load(engine: DuckDBEngine, workspace_id: str, count: int, chunk: int = 1_000_000) -> None:
    """Insert ``count`` profiles into the engine's table of the workspace, a chunk at a time."""
    state = engine._workspace(workspace_id)  # the engine's own table and pid sequence
    assert state is not None and state.index is None, "bulk-load before the first upsert"
    con = engine._con.cursor()  # the engine's own database (a second connect must match its config)
    try:
        con.execute("SET TimeZone = 'UTC'")
        for start in range(0, count, chunk):
            con.execute(bulk_sql(state.table, state.sequence, start, min(count, start + chunk)))
    finally:
        con.close()


def profile(rng: random.Random) -> dict[str, Any]:
    """One profile's attributes, the same distributions as the bulk load (JSON-ready types)."""
    tags = [tag for tag, p in zip(TAGS, TAG_PER_MILLE, strict=True) if rng.random() * 1000 < p]
    return {
        "country": rng.choice(COUNTRIES),
        "age": None if rng.random() < 0.05 else rng.randint(16, 85),
        "plan": rng.choice(PLANS),
        "tags": tags,
        "lifetime_value": round(rng.lognormvariate(4.5, 1.3), 2),
        "signup_date": date(2018, 1, 1) + timedelta(days=rng.randrange(SIGNUP_DAYS)),
        "last_seen": NOW - timedelta(minutes=rng.randrange(SEEN_MINUTES)),
        "churned": rng.random() < 0.2,
    }


def as_json(attrs: dict[str, Any]) -> dict[str, Any]:
    """The attributes as a client sends them: dates and timestamps as ISO 8601 text."""
    return {k: v.isoformat() if isinstance(v, date) else v for k, v in attrs.items()}


def upsert_batch(
    rng: random.Random, batch: int, tag: str, existing: int
) -> list[tuple[str, dict[str, Any]]]:
    """``batch`` records: half new ids (``<tag>-<n>``), half updates of random stored profiles."""
    fresh = batch // 2
    records = [(f"{tag}-{n}", profile(rng)) for n in range(fresh)]
    records += [(f"user-{rng.randrange(existing)}", profile(rng)) for _ in range(batch - fresh)]
    return records
