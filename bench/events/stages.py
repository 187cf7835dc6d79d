"""What a 10,000-event ``POST /v1/events`` costs, stage by stage, in process.

    .venv/bin/python -m bench.events.stages                       # 100,000 events, 10 calls
    .venv/bin/python -m bench.events.stages --events 200000 --profiles 20000
    .venv/bin/python -m bench.events.stages --loaded /var/tmp/loaded  # into 1M profiles, 10M events

The same work as section 2 of ``bench.events.run`` (demo-like events, the 5 streaming
behavioural audiences, properties declared) without HTTP: each call's body is parsed,
validated and made into records by the route's ``api.event_bodies``, written by
``services.events.write`` and its answer rendered and encoded as the route does. Start-up
objects are frozen first, as ``audiences serve`` does. CPU time (every thread of the process,
DuckDB's included) is summed per stage and for the engine and service functions named in
:data:`PARTS`, then shown per call.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import orjson

from audiences.api import event_bodies
from audiences.kit.clock import utcnow
from audiences.kit.heap import freeze_startup_objects
from audiences.services import events
from bench.events import data, loaded, run
from bench.events.cpu import spent, timed
from bench.membership.run import Bench, load_average

PARTS = [
    ("audiences.engines.duckdb", "DuckDBEngine.write_events", "engine: write_events"),
    ("audiences.engines.duckdb_event_writes", "check_events", "  check the records"),
    ("audiences.engines.duckdb_events", "id_hashes", "  hash the event ids"),
    ("audiences.engines.duckdb_event_writes", "seen_ids", "  the stored ids' hashes (built once)"),
    ("audiences.engines.duckdb_event_writes", "stored_ids", "  look the event ids up"),
    ("audiences.engines.duckdb_writes", "resolve", "  find the profiles' pids"),
    ("audiences.engines.duckdb_writes", "insert_empty", "  create the new profiles"),
    ("audiences.engines.duckdb_events", "insert", "  append to the events table"),
    ("audiences.services.evaluation", "on_profiles_written", "streaming evaluation"),
    ("audiences.engines.duckdb", "DuckDBEngine.events_of", "  read the profiles' events"),
    ("audiences.engines.duckdb", "DuckDBEngine.get_profiles_by_pid", "  read the profiles"),
    ("audiences.services.memberships", "apply", "  store membership changes"),
]
"""Functions timed inside ``services.events.write``: module, name, label (indented: part of
the one above)."""


def main(argv: list[str] | None = None) -> None:
    """Run the calls and print a Markdown table of CPU milliseconds per call."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--profiles", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument(
        "--loaded",
        type=Path,
        help="write into a copy of the workspace loaded in this folder"
        " (bench.events.loaded; built there first if absent)",
    )
    parser.add_argument("--loaded-profiles", type=int, default=1_000_000)
    parser.add_argument("--loaded-events", type=int, default=10_000_000)
    parser.add_argument("--event-ids", type=int, default=loaded.ID_SHARE)
    args = parser.parse_args(argv)
    stored = args.loaded_profiles if args.loaded is not None else 0
    made = run._bodies(args.profiles, args.events, stored=stored, id_share=args.event_ids)
    bodies = [orjson.dumps(body) for body in made]
    if len(bodies) < 2:
        parser.error("at least two calls are needed: the first is shown apart")
    measured = sum(len(body["events"]) for body in made[1:])
    for module, qualified, label in PARTS:
        timed(module, qualified, label)
    print(f"Load average at start: {load_average()}")
    if args.loaded is not None:
        for line in loaded.build(args.loaded, args.loaded_profiles, args.loaded_events):
            print(line)
    with tempfile.TemporaryDirectory(dir=args.loaded) as folder:
        if args.loaded is not None:
            bench = Bench(loaded.copy(args.loaded, Path(folder) / "data"))
        else:
            bench = Bench(Path(folder))
            data.declare_properties(bench)
        bench.create_audiences(run.STREAMING, "streaming")
        window = timedelta(hours=bench.app.state.settings.event_dedupe_window_hours)
        limits = events.Limits(10_000, timedelta(seconds=300), window)
        freeze_startup_objects()
        stages: Counter[str] = Counter()

        def stage(label: str, started: float) -> float:
            now = time.process_time()
            stages[label] += now - started
            return now

        warm_up = time.process_time()
        for number, raw in enumerate(bodies):
            if number == 1:  # the first call is shown apart: it builds what a start leaves empty
                warm_up = time.process_time() - warm_up
                stages.clear()
                spent.clear()
            at = time.process_time()
            parsed = event_bodies.parse(raw)
            at = stage("parse the body (orjson)", at)
            body = event_bodies.read(raw, parsed, max_events=limits.max_events, received=utcnow())
            at = stage("validate it, make records", at)
            with bench.factory.begin() as session:
                results = events.write(
                    session,
                    workspace_id=bench.ws,
                    runtime=bench.runtime,
                    records=body.records,
                    limits=limits,
                    received_at=body.received,
                )
            at = stage("services.events.write, committed", at)
            _, out = event_bodies.answer(body.records, results, "bench")
            orjson.dumps(out)
            stage("render the answer", at)
        calls = len(bodies) - 1
        total = sum(stages.values())
        print(
            f"{args.events:,} events in {calls + 1} calls. The first, after the start, took"
            f" {warm_up * 1000:.0f} ms of CPU (with the DuckDB engine's streaming copy built);"
            " CPU ms per call of the others (10,000 events each):\n"
        )
        print("| stage | ms |\n| --- | ---: |")
        for label, seconds in stages.items():
            print(f"| {label} | {seconds / calls * 1000:.1f} |")
            if label.startswith("services"):
                for _, _, part in PARTS:
                    indent = "&nbsp;" * (2 + len(part) - len(part.lstrip()))
                    print(f"| {indent}{part.strip()} | {spent[part] / calls * 1000:.1f} |")
        print(f"| **total** | **{total / calls * 1000:.1f}** |")
        per_second = measured / total
        print(f"\n{per_second:,.0f} events per CPU second; load average {load_average()}")
        bench.close()


if __name__ == "__main__":
    main()
