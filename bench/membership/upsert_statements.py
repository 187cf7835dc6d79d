"""Where the engine's profile upsert spends its time, statement by statement.

    python -m bench.membership.upsert_statements [--profiles 1000000] [--batches 12] [--size 1000]

Loads the membership benchmark's workspace, then times each SQL statement that
``DuckDBEngine.upsert_profiles`` sends for batches of ``--size`` records (half new ids, half
updates of random stored profiles, as section 2a of ``bench.membership.run``).
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.membership import data
from bench.membership.run import Bench, load


class TimedCursor:
    """Wraps a DuckDB connection and adds each statement's time to ``timings``."""

    def __init__(self, connection: Any, timings: dict[str, list[float]]) -> None:
        self.connection = connection
        self.timings = timings

    def execute(self, query: str, *args: Any) -> Any:
        started = time.perf_counter()
        result = self.connection.execute(query, *args)
        label = " ".join(query.split())[:70]
        self.timings.setdefault(label, []).append(time.perf_counter() - started)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.connection, name)


def main() -> None:
    """Print the median time per batch and each statement's share."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--size", type=int, default=1000, help="records per batch")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        bench = Bench(Path(folder))
        for _ in load(bench, args.profiles, 1000):
            pass
        engine = bench.engine
        timings: dict[str, list[float]] = {}
        writer = engine._writer
        engine._writer = TimedCursor(writer, timings)  # type: ignore[assignment]
        rng = random.Random(1)
        totals = []
        for n in range(args.batches):
            records = data.upsert_batch(rng, args.size, f"new{n}", args.profiles)
            started = time.perf_counter()
            engine.upsert_profiles(bench.ws, records)
            totals.append(time.perf_counter() - started)
        engine._writer = writer
        bench.close()
    print(
        f"upsert_profiles, {args.size:,} records: median {statistics.median(totals) * 1000:.1f} ms"
    )
    for label, seconds in sorted(timings.items(), key=lambda item: -sum(item[1])):
        print(f"{sum(seconds) / args.batches * 1000:8.2f} ms/batch  {label}")


if __name__ == "__main__":
    main()
