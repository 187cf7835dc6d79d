"""Batch evaluation on the ClickHouse engine (chdb) against hand-written ClickHouse SQL.

    .venv/bin/python -m bench.engines.clickhouse                      # quick: 1M profiles
    .venv/bin/python -m bench.engines.clickhouse --profiles 200000    # what fits a busy laptop

The profiles of ``bench.engines.batch`` (same seed, same data) are loaded through
``upsert_profiles``; then 20 audiences run as rules compiled for ClickHouse through
``select_many`` (ours) and as the SQL a person would write, ``SELECT groupBitmapState(pid) FROM
t FINAL WHERE ...`` read into a BitMap (hand-written; FINAL too, or updated profiles would
count twice). Last, 1,000-record upsert batches (half new ids, half updates).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import chdb
from pyroaring import BitMap

from audiences import rules
from audiences.engines import clickhouse_sql as sql
from audiences.engines.clickhouse import ClickHouseEngine
from audiences.engines.clickhouse_client import ChdbClient
from audiences.services.evaluation.compiled import engine_column
from bench.engines.batch import (
    NOW,
    SCHEMA,
    WS,
    generate,
    interleaved,
    load,
    machine,
    upsert_batches,
)

TAGS = "CAST(tags, 'Array(String)')"
AUDIENCES: dict[str, tuple[str, str]] = {  # rule text, hand-written ClickHouse condition
    "us": ("country = 'US'", "country = 'US'"),
    "adults_30": ("age >= 30", "age >= 30"),
    "pro_or_team": ("plan IN ('pro', 'team')", "plan IN ('pro', 'team')"),
    "us_pro_30": (
        "country = 'US' AND age >= 30 AND plan IN ('pro', 'team')",
        "country = 'US' AND age >= 30 AND plan IN ('pro', 'team')",
    ),
    "active": ("NOT churned", "NOT churned"),
    "vip": ("list_contains(tags, 'vip')", f"has({TAGS}, 'vip')"),
    "vip_not_churned": (
        "list_contains(tags, 'vip') AND NOT churned",
        f"has({TAGS}, 'vip') AND NOT churned",
    ),
    "high_value": ("lifetime_value > 1000", "lifetime_value > 1000"),
    "recent_30d": (
        "last_seen > now() - INTERVAL 30 DAY",
        "last_seen > toDateTime64('2024-12-02 00:00:00', 6, 'UTC')",
    ),
    "dormant": (
        "last_seen < TIMESTAMP '2024-06-01 00:00:00+00:00'",
        "last_seen < toDateTime64('2024-06-01 00:00:00', 6, 'UTC')",
    ),
    "signed_2024": ("signup_date >= DATE '2024-01-01'", "signup_date >= toDate32('2024-01-01')"),
    "eu": ("country IN ('DE', 'FR', 'ES', 'IT')", "country IN ('DE', 'FR', 'ES', 'IT')"),
    "eu_young": (
        "country IN ('DE', 'FR', 'ES', 'IT') AND age < 25",
        "country IN ('DE', 'FR', 'ES', 'IT') AND age < 25",
    ),
    "enterprise_us": (
        "plan = 'enterprise' AND country = 'US'",
        "plan = 'enterprise' AND country = 'US'",
    ),
    "no_age": ("age IS NULL", "age IS NULL"),
    "mobile_trial": (
        "list_contains(tags, 'mobile') AND list_contains(tags, 'trial')",
        f"hasAll({TAGS}, ['mobile', 'trial'])",
    ),
    "value_band": ("lifetime_value BETWEEN 100 AND 500", "lifetime_value BETWEEN 100 AND 500"),
    "free_active": (
        "plan = 'free' AND NOT churned AND last_seen > TIMESTAMP '2024-12-01 00:00:00+00:00'",
        "plan = 'free' AND NOT churned"
        " AND last_seen > toDateTime64('2024-12-01 00:00:00', 6, 'UTC')",
    ),
    "seniors_or_partners": (
        "age >= 65 OR list_contains(tags, 'partner')",
        f"age >= 65 OR has({TAGS}, 'partner')",
    ),
    "gb_ca_value": (
        "country IN ('GB', 'CA') AND lifetime_value > 200 AND NOT churned",
        "country IN ('GB', 'CA') AND lifetime_value > 200 AND NOT churned",
    ),
}


def compiled() -> dict[str, str]:
    """Each audience's rule as the service compiles it for ClickHouse (now: the bench's)."""
    return {
        key: rules.to_sql(
            rules.validate_rule(text, SCHEMA), "clickhouse", column=engine_column, now=NOW
        )
        for key, (text, _) in AUDIENCES.items()
    }


def hand_written(client: ChdbClient, table: str) -> dict[str, BitMap]:
    """The baseline: the query a person would write, straight into bitmaps."""
    return {
        key: sql.read_bitmap(
            client.query(
                f"SELECT groupBitmapState(pid) FROM {table} FINAL WHERE {where}", "RowBinary"
            )
        )
        for key, (_, where) in AUDIENCES.items()
    }


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print a Markdown section ready for bench/README.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=20250101)
    parser.add_argument("--load-batch", type=int, default=10_000)
    parser.add_argument("--upsert-batches", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.data_dir) as folder:
        for line in run(Path(folder), args):
            print(line, flush=True)


def run(folder: Path, args: argparse.Namespace) -> Iterator[str]:
    """The benchmark itself, yielding report lines as results arrive."""
    count = args.profiles
    yield f"### ClickHouse engine (chdb), {count:,} profiles ({date.today().isoformat()})"
    yield ""
    yield f"Machine: {machine()}; chdb {chdb.__version__} (ClickHouse {chdb.engine_version})"
    client = ChdbClient(folder)
    engine = ClickHouseEngine(client)
    engine.ensure_attributes(WS, SCHEMA)
    rate = load(engine, generate(count, args.seed), count, args.load_batch)  # type: ignore[arg-type]
    yield f"- load through upsert_profiles ({args.load_batch:,}/batch): {rate:,.0f} profiles/s"
    where = compiled()
    table = sql.table("audiences", "profiles_bench")
    hand_written(client, table)  # warm both paths on the same data
    timings = interleaved(
        args.repeat,
        {
            "ours: select_many (compiled rules)": lambda: engine.select_many(WS, where),
            "hand-written ClickHouse x20": lambda: hand_written(client, table),
        },
    )
    reference = timings["hand-written ClickHouse x20"][1]
    base = timings["hand-written ClickHouse x20"][0]
    yield ""
    yield "| 20 audiences | seconds | profile·audience checks/s | vs hand-written |"
    yield "| --- | ---: | ---: | ---: |"
    for label, (seconds, result) in timings.items():
        assert result == reference, f"{label} disagrees with the hand-written queries"
        checks = count * len(AUDIENCES)
        yield f"| {label} | {seconds:.3f} | {checks / seconds:,.0f} | {base / seconds:.2f}x |"
    members = sum(len(bitmap) for bitmap in reference.values())
    yield ""
    yield f"Members across the 20 audiences: {members:,} (both paths agree)."
    upserts = upsert_batches(engine, count, args.upsert_batches, args.seed)  # type: ignore[arg-type]
    median, p95 = statistics.median(upserts), sorted(upserts)[int(len(upserts) * 0.95) - 1]
    yield (
        f"- upsert, 1,000-record batches (500 new, 500 updates) x{len(upserts)}:"
        f" median {median * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms,"
        f" {1000 / statistics.mean(upserts):,.0f} records/s"
    )
    engine.close()


if __name__ == "__main__":
    main()
