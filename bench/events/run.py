"""Behaviour: events ingested and behavioural audiences evaluated, each beside its reference.

    .venv/bin/python -m bench.events.run            # quick: 1M profiles, 10M events
    .venv/bin/python -m bench.events.run --full     # full: 5M profiles, 50M events
    .venv/bin/python -m bench.events.run --only imports --import-sizes 1000000,5000000

Everything runs side by side in one run against references measured in the same run:

1. Batch evaluation of 20 behavioural audiences (``bench/events/workload.py``) through our service
   path (rules validated and compiled to correlated subqueries over the events, run by the engine,
   pids into bitmaps; and ``refresh_many``, which stores membership and runs) against the same 20
   conditions written by hand as DuckDB SQL on the same engine's tables, fetched into bitmaps.
   Every audience's members are compared with the hand-written query's first.
2. Ingest over HTTP: ``POST /v1/events`` at 10,000 events a call (demo-like events, profiles
   created on first sight, event properties declared, behavioural audiences defined) on one server
   process, timed until the last call's answer (stored, and streaming audiences updated, before it
   returns); beside it the engine's own bulk insert of the same events (DuckDB appending the same
   rows from columns held in memory), the limit of any ingest into it.
3. Streaming latency over HTTP (``bench/events/streaming.py``): from an event write to the
   membership read that shows the profile entered, and from a window's expiry to the exit,
   on a server with a short sweep interval.
4. Memory while importing a file of events (``bench/events/imports.py``): the server's peak
   resident memory during ``POST /v1/events/imports`` and its job, at 1M and 5M events (50M
   with ``--full``), beside DuckDB loading the same file.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import itertools
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
from pyroaring import BitMap

from audiences.cli import demo_events
from audiences.engines import duckdb_sql
from audiences.services import evaluation
from audiences.services.evaluation.compiled import workspace_schema
from bench.events import data, imports, loaded, streaming
from bench.events.workload import BEHAVIOUR
from bench.http import measure, servers
from bench.http.client import call
from bench.membership.run import Bench, load_average, machine, rounds, spread

NOW_SQL = f"TIMESTAMPTZ '{data.NOW.isoformat()}'"
CHUNK = 2_000_000


def _bitmap(pids: Any) -> BitMap:
    return BitMap(array.array("I", np.ascontiguousarray(pids, np.uint32).tobytes()))


def load(bench: Bench, profiles: int, events: int) -> Iterator[str]:
    """Profiles and events bulk-loaded into the engine's own tables (the benchmark's fast path)."""
    started = time.perf_counter()
    data.bulk_load(bench, profiles, events, chunk=CHUNK)
    yield (
        f"Loaded {profiles:,} profiles and {events:,} events in"
        f" {time.perf_counter() - started:.1f} s (bulk SQL into the engine's tables)."
    )


def hand_written(con: duckdb.DuckDBPyConnection, ev: str, pt: str) -> dict[str, BitMap]:
    """The reference: each condition as the SQL a person would write, into bitmaps."""
    return {
        key: _bitmap(con.execute(sql.format(ev=ev, pt=pt, now=NOW_SQL)).fetchnumpy()["pid"])
        for key, (_, sql) in BEHAVIOUR.items()
    }


def ours_select(bench: Bench) -> dict[str, BitMap]:
    """Our rules, bound to the workspace's schema, run by the engine into bitmaps."""
    with bench.factory() as session:
        schema = workspace_schema(session, bench.ws)
        return {
            key: evaluation.select_members(
                session,
                runtime=bench.runtime,
                workspace_id=bench.ws,
                rule=evaluation.bound_rule(rule, schema),
                now=data.NOW,
            )
            for key, (rule, _) in BEHAVIOUR.items()
        }


def ours_refresh(bench: Bench) -> None:
    """The whole service path: ``refresh_many`` of the 20, membership and runs committed."""
    with bench.factory.begin() as session:
        rows = bench.rows(session, list(BEHAVIOUR))
        done = evaluation.refresh_many(
            session, runtime=bench.runtime, audiences=rows, trigger="bench"
        )
        assert all(run.status == "succeeded" for run in done), [run.error for run in done]


def batch(bench: Bench, repeat: int) -> Iterator[str]:
    """Section 1."""
    state = bench.engine._workspace(bench.ws)
    assert state is not None
    con = bench.engine._con.cursor()
    con.execute("SET TimeZone = 'UTC'")
    reference = hand_written(con, state.events, state.table)
    found = ours_select(bench)
    wrong = [key for key in BEHAVIOUR if found[key] != reference[key]]
    assert not wrong, f"our members differ from the hand-written SQL's: {wrong}"
    bench.create_audiences({key: rule for key, (rule, _) in BEHAVIOUR.items()}, "manual")
    timings = rounds(
        repeat,
        {
            "hand-written DuckDB SQL x20, into bitmaps": lambda: hand_written(
                con, state.events, state.table
            ),
            "ours: select_members x20 (compiled rules, engine, bitmaps)": lambda: ours_select(
                bench
            ),
            "ours: refresh_many of the 20 (+ membership and runs stored, commit)": lambda: (
                ours_refresh(bench)
            ),
        },
    )
    con.close()
    base = statistics.median(timings["hand-written DuckDB SQL x20, into bitmaps"])
    yield ""
    yield f"**1. Batch evaluation of 20 behavioural audiences** (median of {repeat} rounds)"
    yield ""
    yield "| path | seconds: median (range) | vs hand-written (speed) |"
    yield "| --- | ---: | ---: |"
    for label, seconds in timings.items():
        yield (
            f"| {label} | {spread(seconds, '{:.3f}')} | {base / statistics.median(seconds):.2f}x |"
        )
    yield ""
    yield "Members per audience (identical in both): " + ", ".join(
        f"{key} {len(reference[key]):,}" for key in BEHAVIOUR
    )


# 2. Ingest over HTTP.


STREAMING = {  # behavioural audiences defined on the ingest server
    "buyers_30d": "count(*) FILTER (WHERE event = 'order' AND timestamp >= now() - INTERVAL 30 DAY)"
    " >= 1",
    "spenders_90d": "sum(amount) FILTER (WHERE event = 'order'"
    " AND timestamp >= now() - INTERVAL 90 DAY) > 200",
    "pricing_7d": "count(*) FILTER (WHERE event = 'pricing_viewed'"
    " AND timestamp >= now() - INTERVAL 7 DAY) >= 1",
    "lapsed": "max(timestamp) FILTER (WHERE event = 'order') < now() - INTERVAL 60 DAY",
    "active_1d": "count(*) FILTER (WHERE timestamp >= now() - INTERVAL 1 DAY) >= 1",
}


def _bodies(
    profiles: int, limit: int, *, stored: int = 0, id_share: int = 0
) -> list[dict[str, Any]]:
    """Demo-like events of ``profiles`` profiles (at most ``limit``), 10,000 to a call body.

    With ``stored`` (the profiles of a loaded workspace) the profiles are spread over its
    stored ones, a few new (``loaded.external_id``); ``id_share`` percent of the events carry
    a client ``event_id`` (a random UUID, as the SDKs send)."""
    made = itertools.islice(demo_events.events(profiles), limit)
    bodies, count = [], 0
    ids: dict[str, str] = {}
    while chunk := list(itertools.islice(made, measure.BATCH)):
        events = []
        for record in chunk:
            profile_id = record.external_id
            if stored:
                profile_id = ids.get(profile_id) or ids.setdefault(
                    profile_id, loaded.external_id(int(profile_id[5:]), stored)
                )
            event = {
                "profile_id": profile_id,
                "event": record.name,
                "timestamp": record.timestamp.astimezone(UTC).isoformat(),
                "properties": dict(record.properties),
            }
            if count % 100 < id_share:
                event["event_id"] = str(uuid.uuid4())
            count += 1
            events.append(event)
        bodies.append({"events": events})
    return bodies


async def _prepare(server: servers.Server, mode: str) -> list[str]:
    conn = measure.connect(server)
    for name, kind in data.PROPERTIES.items():  # 200: declared already (a loaded workspace)
        declared = await conn.request("PUT", f"/v1/event-properties/{name}", {"type": kind})
        if declared.status not in (200, 201):
            raise RuntimeError(f"PUT /v1/event-properties/{name}: {declared.status}")
    modes = []
    for key, rule in STREAMING.items():
        body = {"key": key, "name": key, "kind": "dynamic", "rule": rule}
        body["refresh_policy"] = {"mode": mode}
        created = await call(conn, "POST", "/v1/audiences", body, expect=201)
        modes.append(str((created.json().get("evaluation_mode") or {}).get("mode", "?")))
    await conn.close()
    return modes


async def _send(server: servers.Server, bodies: list[dict[str, Any]], clients: int) -> None:
    queue = iter(bodies)

    async def client() -> None:
        conn = measure.connect(server)
        for body in queue:
            answer = await conn.request("POST", "/v1/events", body)
            if answer.status not in (200, 201):
                raise RuntimeError(f"POST /v1/events: {answer.status} {answer.body[:300]!r}")
        await conn.close()

    await asyncio.gather(*(client() for _ in range(clients)))


def engine_bulk_insert(bodies: list[dict[str, Any]]) -> float:
    """The limit: DuckDB appending the same rows from columns in memory, in seconds."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(duckdb_sql.create_events_table("e"))
    for name, kind in data.PROPERTIES.items():
        con.execute(duckdb_sql.add_column("e", name, kind))
    rows = [event for body in bodies for event in body["events"]]
    ids = sorted({row["profile_id"] for row in rows})
    pid = {external_id: n for n, external_id in enumerate(ids, start=1)}
    columns = {
        "pid": np.array([pid[row["profile_id"]] for row in rows], dtype=np.uint32),
        "event": np.array([row["event"] for row in rows], dtype=object),
        "ts": np.array([row["timestamp"] for row in rows], dtype=object),
        **{
            name: np.array([row["properties"].get(name) for row in rows], dtype=object)
            for name in data.PROPERTIES
        },
    }
    started = time.perf_counter()
    con.register("src", columns)
    props = ", ".join(f'"{name}"' for name in data.PROPERTIES)
    con.execute(
        f'INSERT INTO e (pid, event, "timestamp", received_at, {props})'
        f" SELECT pid, event, ts::TIMESTAMPTZ, now(), {props} FROM src"
    )
    seconds = time.perf_counter() - started
    con.close()
    return seconds


def ingest(
    folder: Path,
    profiles: int,
    events: int,
    clients: int,
    *,
    tree: str = "src",
    into: Path | None = None,
    stored: int = 0,
    id_share: int = 0,
) -> Iterator[str]:
    """Section 2: into a fresh workspace, or a copy of the loaded one in ``into`` (of
    ``stored`` profiles; ``bench.events.loaded``), by the server of ``tree``'s ``src``."""
    # One more call than measured: the first after the start is timed apart (on the DuckDB
    # engine it builds the streaming copy of the events the audiences read, once a start).
    first, *bodies = _bodies(profiles, events + measure.BATCH, stored=stored, id_share=id_share)
    count = sum(len(body["events"]) for body in bodies)
    server_tree = servers.Tree.parse(tree)
    if into is not None:
        loaded.copy(into, folder / "ingest" / "data")
    server = servers.start(server_tree, "A", folder / "ingest")
    try:
        modes = asyncio.run(_prepare(server, "streaming"))
        cpu, started = server.cpu_seconds(), time.perf_counter()
        asyncio.run(_send(server, [first], 1))
        first_seconds, first_cpu = time.perf_counter() - started, server.cpu_seconds() - cpu
        cpu, started = server.cpu_seconds(), time.perf_counter()
        asyncio.run(_send(server, bodies, clients))
        seconds = time.perf_counter() - started
        cpu = server.cpu_seconds() - cpu
    finally:
        server.stop()
    limit = engine_bulk_insert(bodies)
    where = "a fresh workspace"
    if into is not None:
        where = f"the loaded workspace ({into}: {stored:,} profiles, 1 in {loaded.NEW_SHARE} new)"
    yield ""
    yield (
        f"**2. Ingest** (server: {server_tree.src} at {server_tree.commit}): {count:,} events"
        f" of {profiles:,} profiles into {where}, {id_share}% with an event_id, 10,000 a call"
        f" from {clients} clients; 5 behavioural audiences defined (evaluation modes:"
        f" {', '.join(modes)})"
    )
    yield ""
    yield (
        f"The first call after the server started, not in the figures below, took"
        f" {first_seconds:.2f} s and {first_cpu:.2f} s of server CPU."
    )
    yield ""
    yield "| path | seconds | events/s | server CPU µs per event |"
    yield "| --- | ---: | ---: | ---: |"
    yield (
        f"| `POST /v1/events`, end to end (stored, audiences updated) | {seconds:.2f} |"
        f" {count / seconds:,.0f} | {cpu / count * 1e6:.1f} |"
    )
    yield f"| DuckDB's own bulk insert of the same rows | {limit:.2f} | {count / limit:,.0f} | |"


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print a Markdown section ready for bench/README.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--full", action="store_true", help="5M profiles and 50M events")
    parser.add_argument("--profiles", type=int)
    parser.add_argument("--events", type=int)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--ingest-profiles", type=int, default=20_000)
    parser.add_argument("--ingest-events", type=int, default=200_000)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument(
        "--loaded",
        type=Path,
        help="ingest into a copy of a workspace of --profiles and --events (default 1M, 10M)"
        " loaded in this folder (built there on the first run, reused by later ones)",
    )
    parser.add_argument(
        "--event-ids",
        type=int,
        default=loaded.ID_SHARE,
        help="percent of ingested events with a client event_id",
    )
    parser.add_argument("--tree", default="src", help="the src folder whose server ingests")
    parser.add_argument("--only", choices=["batch", "ingest", "streaming", "imports"])
    parser.add_argument(
        "--import-sizes",
        type=lambda text: [int(n) for n in text.split(",")],
        help="events per imported file, comma-separated (default 1M,5M; full adds 50M)",
    )
    parser.add_argument("--stream-profiles", type=int, default=200)
    parser.add_argument("--stream-exits", type=int, default=100)
    parser.add_argument("--window", type=int, default=5, help="seconds (streaming section)")
    parser.add_argument("--sweep", type=int, default=1, help="seconds (streaming section)")
    parser.add_argument("--poll", type=float, default=0.02, help="seconds (streaming section)")
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    profiles = args.profiles or (5_000_000 if args.full else 1_000_000)
    events = args.events or (50_000_000 if args.full else 10_000_000)
    sections: list[Callable[[Path], Iterator[str]]] = []
    if args.only in (None, "batch"):
        sections.append(lambda folder: _batch_run(folder, profiles, events, args.repeat))
    if args.only in (None, "ingest"):

        def ingest_section(folder: Path) -> Iterator[str]:
            if args.loaded is not None:
                yield from loaded.build(args.loaded, profiles, events)
            yield from ingest(
                folder,
                args.ingest_profiles,
                args.ingest_events,
                args.clients,
                tree=args.tree,
                into=args.loaded,
                stored=profiles if args.loaded is not None else 0,
                id_share=args.event_ids,
            )

        sections.append(ingest_section)
    if args.only in (None, "streaming"):
        sections.append(
            lambda folder: streaming.run(
                folder,
                profiles=args.stream_profiles,
                exits=args.stream_exits,
                window=args.window,
                sweep=args.sweep,
                poll=args.poll,
            )
        )
    if args.only in (None, "imports"):
        sizes = args.import_sizes or [1_000_000, 5_000_000, *([50_000_000] if args.full else [])]
        sections.append(lambda folder: imports.run(folder, sizes))
    print(f"Command: `{' '.join(['python -m bench.events.run', *sys.argv[1:]])}`")
    print(f"Machine: {machine()}; load average at start {load_average()}")
    with tempfile.TemporaryDirectory(dir=args.data_dir) as folder:
        for section in sections:
            for line in section(Path(folder)):
                print(line, flush=True)
    print(f"\nLoad average at the end: {load_average()}")


def _batch_run(folder: Path, profiles: int, events: int, repeat: int) -> Iterator[str]:
    bench = Bench(folder / "batch")
    try:
        yield from load(bench, profiles, events)
        yield from batch(bench, repeat)
    finally:
        bench.close()


if __name__ == "__main__":
    main()
