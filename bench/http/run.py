"""HTTP benchmark of one or more source trees, served side by side and measured in one sitting.

    .venv/bin/python -m bench.http.run --src /work/wt/before/src@asyncio/h11 --src src --quick
    .venv/bin/python -m bench.http.run --src /work/wt/before/src@asyncio/h11 --src src --full

Each ``--src`` is a tree's ``src`` folder, optionally with uvicorn's ``@LOOP/HTTP`` (default
``auto/auto``, as ``audiences serve`` runs now; ``asyncio/h11`` is the server before
uvicorn[standard]). The first tree is the reference of the ratio columns. Every tree gets its
own server process on a fresh data folder (SQLite metadata, DuckDB profiles, embedded workers
on), seeded through the API; then every measurement runs on every tree in turn, round after
round (the order reversed every other round), so that the machine's noise hits all trees
alike. Last, ``bench.membership.run``'s batch refresh and streaming upserts run once per
tree, in process, with the tree's ``src`` on ``PYTHONPATH``. The report is Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.http import measure
from bench.http.measure import Load, Writes, pct
from bench.http.servers import Server, Tree, start


@dataclass(frozen=True)
class Plan:
    """Sizes and durations of one run."""

    profiles: int
    rounds: int
    big_writes: int  # 10,000-id writes per round
    small_writes: int  # 5-id writes a round
    small_clients: int
    read_seconds: float
    read_connections: int
    mixed_seconds: float
    mixed_clients: int
    warmup_seconds: float  # of the reads-only mixed load on every server, not reported
    engine_args: tuple[tuple[str, ...], ...]  # bench.membership.run runs, after --profiles


QUICK = Plan(
    profiles=100_000,
    rounds=2,
    big_writes=5,
    small_writes=200,
    small_clients=8,
    read_seconds=5,
    read_connections=8,
    mixed_seconds=10,
    mixed_clients=32,
    warmup_seconds=5,
    engine_args=(
        ("--only-batch", "--repeat", "3"),
        ("--only-streaming", "--stream-size", "10000", "--stream-batches", "5"),
    ),
)
FULL = Plan(
    profiles=1_000_000,
    rounds=3,
    big_writes=20,
    small_writes=1000,
    small_clients=8,
    read_seconds=20,
    read_connections=8,
    mixed_seconds=60,
    mixed_clients=32,
    warmup_seconds=10,
    engine_args=(
        ("--only-batch", "--repeat", "5"),
        ("--only-streaming", "--stream-size", "10000", "--stream-batches", "10"),
    ),
)
READS = ("is-member", "profile's audiences")


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, run, print the report as it comes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--src", action="append", required=True, type=Tree.parse)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="100k profiles, ~10 s a measurement")
    size.add_argument("--full", action="store_true", help="1M profiles, 60 s of mixed load")
    parser.add_argument("--profiles", type=int, help="override the plan's profiles")
    parser.add_argument("--rounds", type=int, help="override the plan's rounds")
    parser.add_argument("--big-writes", type=int, help="override the 10,000-id writes a round")
    parser.add_argument("--small-writes", type=int, help="override the 5-id writes a round")
    parser.add_argument("--seconds", type=float, help="every load's duration (smoke runs)")
    parser.add_argument("--no-engine", action="store_true", help="skip bench.membership.run")
    parser.add_argument("--data-dir", type=Path, default=None, help="where the temp folder goes")
    parser.add_argument("--seed", type=int, default=20250101)
    args = parser.parse_args(argv)
    plan = FULL if args.full else QUICK
    if args.profiles:
        plan = replace(plan, profiles=args.profiles)
    if args.rounds:
        plan = replace(plan, rounds=args.rounds)
    if args.big_writes:
        plan = replace(plan, big_writes=args.big_writes)
    if args.small_writes:
        plan = replace(plan, small_writes=args.small_writes)
    if args.seconds:
        s = args.seconds
        plan = replace(plan, read_seconds=s, mixed_seconds=s, warmup_seconds=s)
    if args.no_engine:
        plan = replace(plan, engine_args=())
    with tempfile.TemporaryDirectory(prefix="bench-http-", dir=args.data_dir) as folder:
        for line in report(args.src, plan, Path(folder), args.seed):
            print(line, flush=True)


def report(trees: list[Tree], plan: Plan, folder: Path, seed: int) -> Iterator[str]:
    """The whole run, as Markdown lines."""
    command = " ".join(
        shlex.quote(part) for part in [".venv/bin/python", "-m", "bench.http.run", *sys.argv[1:]]
    )
    yield f"### HTTP benchmark, {plan.profiles:,} profiles ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)"
    yield ""
    yield f"Command: `{command}`"
    yield ""
    yield f"Machine: {machine()}; load average at start {load_average()}"
    yield ""
    yield "| tree | src | commit | uvicorn loop / http |"
    yield "| --- | --- | --- | --- |"
    labels = [f"{chr(65 + k)}" for k in range(len(trees))]
    for label, tree in zip(labels, trees, strict=True):
        yield f"| {label} | `{tree.src}` | {tree.commit} | {tree.loop} / {tree.http} |"
    yield ""
    yield f"Ratios are against tree {labels[0]}, measured in the same rounds."
    servers: list[Server] = []
    try:
        for label, tree in zip(labels, trees, strict=True):
            servers.append(start(tree, label, folder / label))
        yield from seed_all(servers, plan, seed)
        yield from measure_all(servers, plan, seed)
    finally:
        for server in servers:
            server.stop()
    for extra in plan.engine_args:
        yield from engine_bench(trees, labels, plan, folder, extra)
    yield ""
    yield f"Load average at the end: {load_average()}"


def seed_all(servers: list[Server], plan: Plan, seed: int) -> Iterator[str]:
    """Seed every server, 10,000 profiles at a time in turn (5 streaming audiences defined)."""
    for server in servers:
        asyncio.run(measure.prepare(server))
    seconds = dict.fromkeys((s.label for s in servers), 0.0)
    cpu = dict.fromkeys((s.label for s in servers), 0.0)
    for start_at in range(0, plan.profiles, measure.BATCH):
        stop_at = min(plan.profiles, start_at + measure.BATCH)
        for server in servers:
            used, started = server.cpu_seconds(), time.perf_counter()
            asyncio.run(measure.load_profiles(server, start_at, stop_at, seed))
            seconds[server.label] += time.perf_counter() - started
            cpu[server.label] += server.cpu_seconds() - used
    yield ""
    yield (
        f"**Seeding**: {plan.profiles:,} profiles through `POST /v1/profiles/batch`, 10,000 a"
        f" call, 5 streaming audiences defined (the trees' calls alternate):"
    )
    yield ""
    yield "| tree | seconds | profiles/s | server CPU ms per 10,000 | vs first |"
    yield "| --- | ---: | ---: | ---: | ---: |"
    calls = -(-plan.profiles // measure.BATCH)
    first = plan.profiles / seconds[servers[0].label]
    for server in servers:
        rate = plan.profiles / seconds[server.label]
        yield (
            f"| {server.label} | {seconds[server.label]:.1f} | {rate:,.0f} |"
            f" {cpu[server.label] / calls * 1000:,.0f} | {rate / first:.2f}x |"
        )


Step = Callable[[Server, int], Coroutine[Any, Any, Any]]


def steps(plan: Plan, seed: int) -> dict[str, Step]:
    """A round's measurements in order, each a function of the server and the round."""

    def read(name: str) -> Step:
        return lambda server, r: measure.load(
            server,
            [measure.read_op(server, name)],
            plan.read_connections,
            plan.read_seconds,
            seed + r,
        )

    mixed, clients, seconds = measure.mixed, plan.mixed_clients, plan.mixed_seconds
    return {
        "big": lambda server, r: measure.big_writes(server, f"big-{r}", plan.big_writes),
        "small": lambda server, r: measure.small_writes(
            server, f"small-{r}", plan.small_clients, plan.small_writes
        ),
        **{name: read(name) for name in READS},
        "mixed reads": lambda server, r: mixed(server, None, clients, seconds, seed + r),
        "mixed": lambda server, r: mixed(server, f"mixed-{r}", clients, seconds, seed + r),
    }


def measure_all(servers: list[Server], plan: Plan, seed: int) -> Iterator[str]:
    """Warm every server up, run the rounds, then print one table per measurement."""
    for server in servers:  # first reads fill caches and warm code paths: not measured
        warm = measure.operations(server, None)
        asyncio.run(measure.load(server, warm, plan.mixed_clients, plan.warmup_seconds, seed))
    todo = steps(plan, seed)
    results: dict[str, dict[str, list[Any]]] = {
        step: {server.label: [] for server in servers} for step in todo
    }
    for r in range(plan.rounds):
        order = servers if r % 2 == 0 else servers[::-1]
        for step, run in todo.items():
            for server in order:
                results[step][server.label].append(asyncio.run(run(server, r)))
    yield from big_table(results["big"], plan)
    yield from small_table(results["small"], plan)
    yield from reads_table({name: results[name] for name in READS}, plan)
    yield from mixed_tables(results["mixed reads"], results["mixed"], plan)


# Tables.


def spread(values: Sequence[float], fmt: str = "{:,.0f}") -> str:
    """``median (min-max)`` of the rounds, or the one value."""
    med = statistics.median(values)
    if len(values) == 1:
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def ratio(values: Sequence[float], reference: Sequence[float]) -> str:
    return f"{statistics.median(values) / statistics.median(reference):.2f}x"


def rows(
    results: dict[str, list[Any]], cells: Callable[[list[Any], list[Any]], str]
) -> Iterator[str]:
    first = next(iter(results.values()))
    for label, runs in results.items():
        yield f"| {label} | {cells(runs, first)} |"


def big_table(results: dict[str, list[Writes]], plan: Plan) -> Iterator[str]:
    yield ""
    yield (
        f"**1. 10,000-id member writes, end to end** ({plan.big_writes} writes a round, one"
        " client, back to back, into a new static audience; timed from the first request until"
        f" every write is applied and the members page counts them all; {plan.rounds} rounds:"
        " median (range))"
    )
    yield ""
    yield (
        "| tree | ids/s | vs first | server CPU ms per write | 202 p50 ms |"
        " applied and visible after the last 202, s |"
    )
    yield "| --- | ---: | ---: | ---: | ---: | ---: |"

    def cells(runs: list[Writes], first: list[Writes]) -> str:
        rate = [w.ids / w.seconds for w in runs]
        cpu = [w.cpu / w.writes * 1000 for w in runs]
        accept = [pct(w.accept, 0.5) * 1000 for w in runs]
        tail = [w.seconds - w.sending for w in runs]
        return (
            f"{spread(rate)} | {ratio(rate, [w.ids / w.seconds for w in first])} |"
            f" {spread(cpu)} | {spread(accept, '{:,.1f}')} | {spread(tail, '{:,.2f}')}"
        )

    yield from rows(results, cells)


def small_table(results: dict[str, list[Writes]], plan: Plan) -> Iterator[str]:
    yield ""
    yield (
        f"**2. 5-id member writes, end to end** ({plan.small_writes:,} writes a round from"
        f" {plan.small_clients} clients, each sending its next write once the last is accepted"
        " (after a 429, again after `Retry-After`); timed until all are applied and visible)"
    )
    yield ""
    yield (
        "| tree | accepted/s | applied/s (end to end) | vs first | 202 p50 / p99 ms | 429s |"
        " server CPU ms per write | applied and visible after the last 202, s |"
    )
    yield "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"

    def cells(runs: list[Writes], first: list[Writes]) -> str:
        accepted = [w.writes / w.sending for w in runs]
        applied = [w.writes / w.seconds for w in runs]
        p50 = statistics.median(pct(w.accept, 0.5) * 1000 for w in runs)
        p99 = statistics.median(pct(w.accept, 0.99) * 1000 for w in runs)
        cpu = [w.cpu / w.writes * 1000 for w in runs]
        return (
            f"{spread(accepted)} | {spread(applied)} |"
            f" {ratio(applied, [w.writes / w.seconds for w in first])} | {p50:,.1f} / {p99:,.1f} |"
            f" {sum(w.refused for w in runs)} | {spread(cpu, '{:,.2f}')} |"
            f" {spread([w.seconds - w.sending for w in runs], '{:,.2f}')}"
        )

    yield from rows(results, cells)


def load_cells(runs: list[Load], name: str) -> tuple[list[float], str]:
    """Requests/s of ``name`` per round, and its ``req/s | p50 | p99`` cells (p50 and p99: the
    median over the rounds of each round's percentile)."""
    rates = [len(load.timings[name].seconds) / load.seconds for load in runs]
    p50 = statistics.median(pct(load.timings[name].seconds, 0.5) * 1000 for load in runs)
    p99 = statistics.median(pct(load.timings[name].seconds, 0.99) * 1000 for load in runs)
    return rates, f"{spread(rates)} | {p50:,.1f} | {p99:,.1f}"


def reads_table(results: dict[str, dict[str, list[Load]]], plan: Plan) -> Iterator[str]:
    yield ""
    yield (
        f"**3. Reads under load** ({plan.read_connections} keep-alive connections, closed loop,"
        f" {plan.read_seconds:.0f} s; a random profile among all and a random streaming"
        " audience each request)"
    )
    yield ""
    yield "| request | tree | requests/s | p50 ms | p99 ms | vs first | server CPU ms per request |"
    yield "| --- | --- | ---: | ---: | ---: | ---: | ---: |"
    for name, by_label in results.items():
        first, _ = load_cells(next(iter(by_label.values())), name)
        for label, runs in by_label.items():
            rates, cells = load_cells(runs, name)
            cpu = [load.cpu / load.requests * 1000 for load in runs]
            cpu_cell = spread(cpu, "{:,.2f}")
            yield f"| {name} | {label} | {cells} | {ratio(rates, first)} | {cpu_cell} |"


def mixed_tables(
    reads_alone: dict[str, list[tuple[Load, float]]],
    with_writes: dict[str, list[tuple[Load, float]]],
    plan: Plan,
) -> Iterator[str]:
    yield ""
    yield (
        f"**4. Mixed load** ({plan.mixed_clients} clients, closed loop, {plan.mixed_seconds:.0f} s,"
        " each request's operation drawn by weight; reads alone first, then with the writes)"
    )
    for label, runs in with_writes.items():
        alone, mixed = [m for m, _ in reads_alone[label]], [m for m, _ in runs]
        yield ""
        yield f"Tree {label}:"
        yield ""
        yield (
            "| operation | weight | reads alone: req/s | p50 ms | p99 ms |"
            " with writes: req/s | p50 ms | p99 ms | 429s |"
        )
        yield "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        for name in mixed[0].timings:
            if name in alone[0].timings:
                _, without = load_cells(alone, name)
            else:
                without = "— | — | —"
            _, loaded = load_cells(mixed, name)
            refused = sum(load.timings[name].refused for load in mixed)
            yield f"| {name} | {measure.WEIGHTS[name]} | {without} | {loaded} | {refused} |"
        total_alone = [load.requests / load.seconds for load in alone]
        total_mixed = [load.requests / load.seconds for load in mixed]
        cpu_alone = [load.cpu / load.requests * 1000 for load in alone]
        cpu_mixed = [load.cpu / load.requests * 1000 for load in mixed]
        drain = [d for _, d in runs]
        yield (f"| all | | {spread(total_alone)} | | | {spread(total_mixed)} | | | |")
        yield ""
        yield (
            f"Server CPU ms per request: reads alone {spread(cpu_alone, '{:,.2f}')}, with writes"
            f" {spread(cpu_mixed, '{:,.2f}')}; member writes all applied"
            f" {spread(drain, '{:,.2f}')} s after the load ended."
        )


def engine_bench(
    trees: list[Tree], labels: list[str], plan: Plan, folder: Path, extra: tuple[str, ...]
) -> Iterator[str]:
    """``bench.membership.run`` with ``extra`` once per tree (its own in-process set-up and,
    for streaming, its own HTTP server), with the tree's ``src`` on ``PYTHONPATH``."""
    command = ["-m", "bench.membership.run", "--profiles", str(plan.profiles), *extra]
    yield ""
    yield (
        f"**5. `python {' '.join(command)}`, per tree** (the trees one after the other; its"
        " HTTP server runs uvicorn's defaults, uvloop and httptools when installed, for every tree)"
    )
    for label, tree in zip(labels, trees, strict=True):
        out = subprocess.run(
            [sys.executable, *command, "--data-dir", str(folder)],
            cwd=folder,
            env=tree.environment(),
            capture_output=True,
            text=True,
        )
        yield ""
        yield f"Tree {label}:"
        yield ""
        if out.returncode != 0:
            yield f"**failed** (exit {out.returncode}):"
            yield "```"
            yield from out.stderr.splitlines()[-20:]
            yield "```"
            continue
        lines = [
            line for line in out.stdout.splitlines() if not line.startswith(("###", "Command:"))
        ]
        while lines and not lines[0].strip():
            lines.pop(0)
        yield from lines


def machine() -> str:
    """CPU model, ``nproc``, memory and Python, as the report's header gives them."""
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    nproc = len(os.sched_getaffinity(0))
    return f"{model}, nproc={nproc}, {memory:.0f} GiB, Python {platform.python_version()}"


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()
