"""Every profile engine side by side in one run: our service's batch evaluation against the same
20 audiences hand-written in each engine's SQL, upserts per second, and members pages.

    .venv/bin/python -m bench.engines.run                          # 1M profiles, every engine
    .venv/bin/python -m bench.engines.run --full                   # 10M profiles
    .venv/bin/python -m bench.engines.run --engines duckdb,postgres --profiles 200000

For each engine, on fresh storage: the seeded profiles are loaded through ``upsert_profiles``;
the 20 rules, compiled as the service compiles them (``services.evaluation.compiled``: the rule
bound to the schema, then ``to_engine_sql`` for the engine's dialect), run through
``select_many`` (ours) against the hand-written conditions fetched by the engine's own client
(``stores``), taking turns, best of ``--repeat``; every audience's members must agree. Then
1,000-record upsert batches (500 new, 500 updates) and members pages (``external_ids_for`` of
200 pids at a random offset of an audience of about 30% of the profiles). A Markdown section
is printed for bench/README.md.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

from pyroaring import BitMap

from audiences.services.evaluation import compiled
from bench.engines import stores
from bench.engines.predicates import RULES
from bench.engines.service import Service
from bench.engines.workload import (
    NOW,
    SCHEMA,
    generate,
    interleaved,
    load,
    load_average,
    machine,
    member_pages,
    quantile,
    upsert_batches,
)

SERVICE = "ours: refresh_many (compile, select, store members and runs)"
OURS = "ours: compiled rules, select_many"


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print a Markdown section ready for bench/README.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--engines", default=",".join(stores.KINDS))
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--full", action="store_true", help="10M profiles")
    parser.add_argument("--seed", type=int, default=20250101)
    parser.add_argument("--load-batch", type=int, default=10_000)
    parser.add_argument("--upsert-batches", type=int, default=50)
    parser.add_argument("--pages", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.full:
        args.profiles = 10_000_000
    unknown = set(args.engines.split(",")) - set(stores.KINDS)
    if unknown:
        parser.error(f"unknown engines {sorted(unknown)}; choose from {', '.join(stores.KINDS)}")
    for line in run(args):
        print(line, flush=True)


def run(args: argparse.Namespace) -> Iterator[str]:
    """The benchmark itself, yielding report lines as results arrive."""
    count = args.profiles
    kinds = [kind.strip() for kind in args.engines.split(",") if kind.strip()]
    yield f"### Profile engines side by side, {count:,} profiles ({date.today().isoformat()})"
    yield ""
    yield f"Machine: {machine()}; load average at start: {load_average()}"
    rows: list[str] = []
    columns = generate(count, args.seed)
    for kind in kinds:
        reason = stores.available(kind)
        if reason is not None:
            yield f"- {kind}: not run ({reason})"
            continue
        yield ""
        yield f"#### {kind}"
        yield ""
        with stores.opened(kind, args.data_dir) as store:
            lines, row = engine_run(store, columns, args)
            yield from lines
            rows.append(f"| {kind} | {row}")
    yield ""
    yield (
        "| engine | load profiles/s | refresh_many s | select_many s | hand-written s"
        " | refresh_many vs hand | select_many vs hand | upsert median ms | upsert p95 ms"
        " | upserts/s | page p50 ms | page p99 ms |"
    )
    yield "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    yield from rows
    yield ""
    yield f"Load average at the end: {load_average()}"


def engine_run(
    store: stores.Store, columns: dict[str, Any], args: argparse.Namespace
) -> tuple[list[str], str]:
    """One engine's figures: report lines and its row of the summary table."""
    count, engine = args.profiles, store.engine
    lines = [f"{store.version}; load average before: {load_average()}", ""]
    service = Service(engine, store.folder, SCHEMA, RULES)
    ws = service.workspace_id
    try:
        rate = load(engine, ws, columns, count, args.load_batch)
        schema = compiled.frozen_schema(SCHEMA)
        where = {
            key: compiled.to_engine_sql(
                compiled.bound_rule(text, schema), engine.dialect, {}, now=NOW
            )
            for key, text in RULES.items()
        }
        baselines = store.baselines(ws)
        for baseline in baselines.values():
            baseline()  # warm every path on the same data
        timings = interleaved(
            args.repeat,
            {
                SERVICE: service.refresh_many,
                OURS: lambda: engine.select_many(ws, where),
                **{f"hand-written, {label}": run for label, run in baselines.items()},
            },
        )
        reference = timings[OURS][1]
        best = min(seconds for label, (seconds, _) in timings.items() if label.startswith("hand"))
        lines += [
            "| 20 audiences | seconds | profile·audience checks/s | vs best hand-written |",
            "| --- | ---: | ---: | ---: |",
        ]
        for label, (seconds, result) in timings.items():
            for key in RULES:
                assert result[key] == reference[key], f"{label} disagrees with ours on {key}"
            checks = count * len(RULES) / seconds
            lines.append(f"| {label} | {seconds:.3f} | {checks:,.0f} | {best / seconds:.2f}x |")
        members = sum(len(bitmap) for bitmap in reference.values())
        lines += ["", f"Members across the 20 audiences: {members:,} (every path agrees)."]
        page_set = closest(reference, 0.3 * count)
        upserts = upsert_batches(engine, ws, count, args.upsert_batches, args.seed)
        median, p95 = statistics.median(upserts), quantile(upserts, 0.95)
        per_second = 1000 / statistics.mean(upserts)
        pages = member_pages(engine, ws, page_set, args.pages, 200, args.seed)
        p50, p99 = statistics.median(pages), quantile(pages, 0.99)
    finally:
        service.close()
    lines += [
        f"- load through upsert_profiles ({args.load_batch:,}/batch): {rate:,.0f} profiles/s",
        f"- upserts, 1,000-record batches (500 new, 500 updates) x{len(upserts)}:"
        f" median {median * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms, {per_second:,.0f} records/s",
        f"- members pages (external_ids_for of 200 pids of {len(page_set):,}) x{len(pages)}:"
        f" p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms",
    ]
    ours, served = timings[OURS][0], timings[SERVICE][0]
    row = (
        f"{rate:,.0f} | {served:.3f} | {ours:.3f} | {best:.3f} | {best / served:.2f}x"
        f" | {best / ours:.2f}x | {median * 1000:.1f} | {p95 * 1000:.1f} | {per_second:,.0f}"
        f" | {p50 * 1000:.2f} | {p99 * 1000:.2f} |"
    )
    return lines, row


def closest(sets: dict[str, BitMap], size: float) -> BitMap:
    """The member set whose size is nearest ``size``."""
    return min(sets.values(), key=lambda bitmap: abs(len(bitmap) - size))


if __name__ == "__main__":
    main()
