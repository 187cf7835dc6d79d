"""What an ``events.import`` job costs per million events, stage by stage, in process.

    .venv/bin/python -m bench.events.import_stages                    # 1M events
    .venv/bin/python -m bench.events.import_stages --events 200000

The file section 4 of ``bench.events.run`` uploads (NDJSON, demo-like events, ten a profile,
properties declared, no audiences) is put where an upload lands, its job queued by
``services.event_imports.accept`` and run by a worker of this process, as the server's
embedded workers run it. CPU time (every thread of the process, DuckDB's included) is summed
for the stages named in :data:`PARTS` and for the whole job; the rest is the job's own
bookkeeping (checkpoints, progress, counts, error lines). Start-up objects are frozen first,
as ``audiences serve`` does. With ``--memory``, the process's resident memory is printed after
every 500,000 events; with ``--route``, the same events (with the ``event_id`` the import
gives each row) go through the steps of ``POST /v1/events`` instead, 10,000 a call, timed as
``bench.events.stages`` times them.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import resource
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from itertools import islice
from pathlib import Path
from typing import Any

import orjson

from audiences.api.routes import events as route
from audiences.jobs.handlers import HANDLERS, HandlerRegistry
from audiences.jobs.worker import Worker
from audiences.kit.clock import utcnow
from audiences.kit.heap import freeze_startup_objects
from audiences.schemas.events import EventBatch, EventFileFormat
from audiences.services import event_imports, events, imports
from bench.events import data
from bench.events import imports as section
from bench.events.cpu import spent, timed
from bench.membership.run import Bench, load_average

HANDLER = "events.import"
PARTS = [
    ("audiences.services.event_imports", "write_chunk", "validate, make records and write"),
    ("audiences.services.events", "write", "  services.events.write, of which"),
    ("audiences.engines.duckdb", "DuckDBEngine.write_events", "    engine: write_events"),
]
"""Functions timed inside the job: module, name, label (indented: part of the one above)."""
READ = "read and parse the file (chunks)"


def _timed_chunks(memory: bool) -> None:
    """Time each ``next`` of ``event_imports.chunks`` (the file read, parsed, made rows)."""
    function = event_imports.chunks

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
        found = function(*args, **kwargs)
        done, mark = 0, 500_000
        while True:
            started = time.process_time()
            chunk = next(found, None)
            spent[READ] += time.process_time() - started
            if chunk is None:
                return
            yield chunk
            done += len(chunk)
            if memory and done >= mark:
                tags = _duckdb_memory()
                held = sum(tags.values())
                print({k: v >> 20 for k, v in tags.items() if v >> 20})
                print(
                    f"  {done:>11,} events: RSS {_rss() / 2**20:,.0f} MiB, DuckDB's own count"
                    f" {held / 2**20:,.0f} MiB",
                    flush=True,
                )
                mark += 500_000

    event_imports.chunks = wrapper  # type: ignore[assignment]


ENGINE: list[Any] = []
"""The engine under test, for :func:`_duckdb_memory`."""


def _duckdb_memory() -> dict[str, int]:
    """DuckDB's own count of the memory it holds, by tag (``duckdb_memory()``)."""
    if not ENGINE:
        return {}
    with ENGINE[0]._cursor() as cur:
        rows = cur.execute("SELECT tag, memory_usage_bytes FROM duckdb_memory()").fetchall()
    return {str(tag): int(used) for tag, used in rows}


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def route_calls(bench: Bench, path: Path, upload_id: str) -> tuple[Counter[str], int]:
    """The same events as ``POST /v1/events`` takes them, 10,000 a call, each with the
    ``event_id`` the import gives its row (so the engine does the same work): CPU seconds by
    stage, as ``bench.events.stages`` times the route, and the events sent."""
    window = timedelta(hours=bench.app.state.settings.event_dedupe_window_hours)
    limits = events.Limits(10_000, timedelta(seconds=300), window)
    stages: Counter[str] = Counter()
    sent = 0

    def stage(label: str, started: float) -> float:
        now = time.process_time()
        stages[label] += now - started
        return now

    with path.open("rb") as lines:
        while batch := list(islice(lines, 10_000)):
            body = (
                b'{"events":['
                + b",".join(
                    line.rstrip()[:-1] + b',"event_id":"%s:%d"}' % (upload_id.encode(), sent + n)
                    for n, line in enumerate(batch, start=1)
                )
                + b"]}"
            )
            sent += len(batch)
            at = time.process_time()
            parsed = orjson.loads(body)
            at = stage("parse the body (orjson)", at)
            valid = EventBatch.model_validate(parsed)
            at = stage("validate it (pydantic)", at)
            received = utcnow()
            records = [route._record(event, received) for event in valid.events]
            at = stage("make records", at)
            with bench.factory.begin() as session:
                results = events.write(
                    session,
                    workspace_id=bench.ws,
                    runtime=bench.runtime,
                    records=records,
                    limits=limits,
                    received_at=received,
                )
            at = stage("services.events.write, committed", at)
            rendered = [
                route._result(n, event, result, None)  # type: ignore[arg-type]
                for n, (event, result) in enumerate(zip(valid.events, results, strict=True))
            ]
            orjson.dumps({"results": rendered})
            stage("render the answer", at)
    return stages, sent


def main(argv: list[str] | None = None) -> None:
    """Import the file once and print a Markdown table of CPU seconds per million events."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--memory", action="store_true", help="print RSS every 500,000 events")
    parser.add_argument("--file", type=Path, help="an NDJSON file written before (kept)")
    parser.add_argument("--chunk-rows", type=int, help="AUDIENCES_IMPORT_CHUNK_ROWS")
    parser.add_argument(
        "--route", action="store_true", help="the same events through POST /v1/events' steps"
    )
    args = parser.parse_args(argv)
    for module, qualified, label in PARTS:
        timed(module, qualified, label)
    _timed_chunks(args.memory)
    print(f"Load average at start: {load_average()}")
    with tempfile.TemporaryDirectory() as folder:
        source = args.file or Path(folder) / "events.ndjson"
        if args.file is None:
            section.write_file(source, args.events)
        bench = Bench(Path(folder) / "app")
        data.declare_properties(bench)
        if args.route:
            freeze_startup_objects()
            stages, sent = route_calls(bench, source, "bench-upload")
            total = sum(stages.values())
            print(f"\n{sent:,} events through the route's steps; CPU seconds per million:\n")
            print("| stage | s per 1M |\n| --- | ---: |")
            for label, seconds in stages.items():
                print(f"| {label} | {seconds * 1e6 / sent:.2f} |")
            print(f"| **total** | **{total * 1e6 / sent:.2f}** |")
            print(f"\n{sent / total:,.0f} events per CPU second; load average {load_average()}")
            bench.close()
            return
        settings = bench.app.state.settings
        if args.chunk_rows:
            settings = settings.model_copy(update={"import_chunk_rows": args.chunk_rows})
        directory = imports.folder(settings.data_dir, bench.ws, "bench-upload")
        directory.mkdir(parents=True)
        upload = directory / imports.UPLOAD
        shutil.copyfile(source, upload)
        with bench.factory.begin() as session:
            event_imports.accept(
                session,
                caller=bench.caller,
                upload=upload,
                fmt=EventFileFormat.NDJSON,
                digest=hashlib.sha256(b"bench").hexdigest(),
                max_attempts=1,
            )
        worker = Worker(
            session_factory=bench.factory,
            settings=settings,
            registry=HandlerRegistry(
                {HANDLER: HANDLERS.get(HANDLER)}, needing_profiles=frozenset({HANDLER})
            ),
            runtime=bench.runtime,
        )
        ENGINE.append(bench.engine)
        freeze_startup_objects()
        rss_before = _rss()
        started, wall = time.process_time(), time.perf_counter()
        assert worker.run_once()
        total, wall = time.process_time() - started, time.perf_counter() - wall
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        per = 1_000_000 / args.events
        print(f"\n{args.events:,} events; CPU seconds per million events:\n")
        print("| stage | s per 1M |\n| --- | ---: |")
        print(f"| {READ} | {spent[READ] * per:.2f} |")
        for _, _, label in PARTS:
            indent = "&nbsp;" * (len(label) - len(label.lstrip()))
            print(f"| {indent}{label.strip()} | {spent[label] * per:.2f} |")
        rest = total - spent[READ] - spent[PARTS[0][2]]
        print(f"| job bookkeeping (the rest) | {rest * per:.2f} |")
        print(f"| **total** | **{total * per:.2f}** |")
        print(
            f"\n{args.events / total:,.0f} events per CPU second, {args.events / wall:,.0f} per"
            f" wall second; RSS before {rss_before / 2**20:,.0f} MiB, peak"
            f" {peak / 2**20:,.0f} MiB; load average {load_average()}"
        )
        bench.close()


if __name__ == "__main__":
    main()
