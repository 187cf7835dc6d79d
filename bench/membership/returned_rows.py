"""Streaming upserts with the rows the engine returns against reading the profiles back.

    python -m bench.membership.returned_rows

1M profiles and the 50 streaming audiences of ``bench.membership.run``; 16 batches of 1,000
records (half new, half updates) through ``profiles.upsert`` per variant, interleaved: one
variant evaluates the rows the engine's upsert returned, the other drops them, so
``on_profiles_written`` reads the written profiles back from the engine as before.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from audiences.services import evaluation, profiles
from bench.membership import data, workload
from bench.membership.run import Bench, load

PROFILES = 1_000_000
BATCHES = 16


def main() -> None:
    """Print the median time per 1,000 records of each variant."""
    returned = evaluation.on_profiles_written

    def read_back(session: Any, **options: Any) -> None:
        options.pop("written", None)
        returned(session, **options)

    variants = {"rows returned by the upsert": returned, "profiles read back": read_back}
    times: dict[str, list[float]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as folder:
        bench = Bench(Path(folder))
        for _ in load(bench, PROFILES, 1000):
            pass
        bench.create_audiences(workload.streaming_rules(), "streaming")
        with bench.factory.begin() as session:
            evaluation.refresh_all(
                session, runtime=bench.runtime, workspace_id=bench.ws, trigger="bench"
            )
        rng = random.Random(5)
        for n in range(BATCHES):
            order = list(variants) if n % 2 else list(reversed(variants))
            for name in order:
                evaluation.on_profiles_written = variants[name]  # type: ignore[assignment]
                records = data.upsert_batch(rng, 1000, f"b{n}-{len(name)}", PROFILES)
                started = time.perf_counter()
                with bench.factory.begin() as session:
                    profiles.upsert(
                        session, caller=bench.caller, runtime=bench.runtime, records=records
                    )
                times[name].append(time.perf_counter() - started)
        evaluation.on_profiles_written = returned  # type: ignore[assignment]
        bench.close()
    for name, seconds in times.items():
        median = statistics.median(seconds[1:])  # the first batch of each warms caches
        print(
            f"{name}: median {median * 1000:.1f} ms per 1,000 records ({1 / median * 1000:,.0f}/s)"
        )


if __name__ == "__main__":
    main()
