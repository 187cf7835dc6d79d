"""Membership end to end: batch evaluation, streaming upserts, member reads, in process and HTTP.

    .venv/bin/python -m bench.membership.run                      # quick: 1M profiles
    .venv/bin/python -m bench.membership.run --profiles 5000000   # full: 5M profiles
    .venv/bin/python -m bench.membership.run --only-batch         # section 1 alone

Everything runs side by side in one run against references measured in the same run:

1. 20 audiences evaluated in batch through our service path (rules validated and compiled to
   DuckDB SQL, pids into bitmaps, membership and run stored) against the same predicates written
   by hand as DuckDB SQL and fetched with ``fetchnumpy()`` into bitmaps; cold (every rule cache
   cleared first) and warm (rules compiled by an earlier run, as in a long-running worker);
2. 1,000-record profile upserts with 50 streaming audiences defined, through the service in
   process and ``POST /v1/profiles/batch`` over HTTP; and 20 compiled rule predicates on one
   profile against one hand-written Python function;
3. is-member and a profile's audiences, in process and over HTTP (sequential p50/p99, and
   requests per second under wrk; ``bench.http.run`` compares them with an earlier tree);
4. a page of members of an audience holding every profile, over HTTP.
"""

from __future__ import annotations

import argparse
import array
import os
import platform
import random
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import duckdb
import httpx
import numpy as np
import orjson
import pyroaring
from pyroaring import BitMap
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from audiences import rules
from audiences.api.app import create_app
from audiences.api.routes import members as member_routes
from audiences.engines import duckdb_sql
from audiences.engines.duckdb import DuckDBEngine
from audiences.kit.cursors import encode_cursor
from audiences.schemas.api_keys import ApiKeyCreate, Role
from audiences.schemas.attributes import AttributeDeclare
from audiences.schemas.audiences import AUDIENCE_WRITE
from audiences.services import (
    api_keys,
    attributes,
    audiences,
    evaluation,
    memberships,
    profiles,
    runs,
    workspaces,
)
from audiences.services.callers import Caller
from audiences.services.runtime import Runtime
from audiences.store.tables import AudienceRow
from bench.membership import data, over_http, server, workload

NOW = datetime(2025, 1, 1, tzinfo=UTC)


class Bench:
    """The workspace under test: its app pieces, caller, token and audience ids by key."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        # In process, cached reads are measured as repeats of the service's answers: keep the
        # caches for the whole run (the HTTP server runs with the default expiry).
        self.app = create_app(
            server.settings(folder).model_copy(update={"read_cache_seconds": 3600})
        )
        self.factory: sessionmaker[Session] = self.app.state.session_factory
        self.runtime: Runtime = self.app.state.runtime
        with self.factory.begin() as session:
            workspace = workspaces.ensure(session, slug="bench", name="Bench")
            _, self.token = api_keys.create(
                session,
                workspace=workspace,
                data=ApiKeyCreate(name="bench", role=Role.ADMIN),
                actor="bench",
            )
            self.caller: Caller = api_keys.authenticate(session, self.token)
            for name, kind in data.SCHEMA.items():
                attributes.declare(
                    session,
                    caller=self.caller,
                    runtime=self.runtime,
                    name=name,
                    data=AttributeDeclare(type=kind),
                )
        self.ids: dict[str, str] = {}

    @property
    def ws(self) -> str:
        return self.caller.workspace_id

    @property
    def engine(self) -> DuckDBEngine:
        engine = self.runtime.profiles
        assert isinstance(engine, DuckDBEngine)
        return engine

    def create_audiences(self, rules: dict[str, str], mode: str) -> None:
        with self.factory.begin() as session:
            for key, rule in rules.items():
                body = {
                    "key": key,
                    "name": key,
                    "kind": "dynamic",
                    "rule": rule,
                    "refresh_policy": {"mode": mode},
                }
                row = audiences.create(
                    session, caller=self.caller, data=AUDIENCE_WRITE.validate_python(body)
                )
                self.ids[key] = row.id

    def rows(self, session: Session, keys: Sequence[str]) -> list[AudienceRow]:
        by_id = {
            row.id: row
            for row in session.scalars(
                select(AudienceRow).where(AudienceRow.id.in_([self.ids[k] for k in keys]))
            )
        }
        return [by_id[self.ids[key]] for key in keys]

    def close(self) -> None:
        self.runtime.profiles.close()
        self.app.state.engine.dispose()


# Helpers: timing and formatting.


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))]


def spread(values: Sequence[float], fmt: str = "{:,.0f}") -> str:
    """``median (min-max)`` of repeated measurements."""
    med = statistics.median(values)
    if len(values) == 1:
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def rounds(repeat: int, runs: dict[str, Callable[[], Any]]) -> dict[str, list[float]]:
    """Seconds of each run in ``repeat`` interleaved rounds, so drift hits every run alike."""
    seconds: dict[str, list[float]] = {label: [] for label in runs}
    for _ in range(repeat):
        for label, run in runs.items():
            started = time.perf_counter()
            run()
            seconds[label].append(time.perf_counter() - started)
    return seconds


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def machine() -> str:
    model = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{model}, nproc={os.cpu_count()}, {memory:.0f} GiB, Python {platform.python_version()},"
        f" duckdb {duckdb.__version__}, pyroaring {pyroaring.__version__}"
    )


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# 0. Loading.


def load(bench: Bench, count: int, sample: int) -> Iterator[str]:
    bulk = max(0, count - sample)
    started = time.perf_counter()
    data.bulk_load(bench.engine, bench.ws, bulk)
    bulk_seconds = time.perf_counter() - started
    rng = random.Random(1)
    started = time.perf_counter()
    for start in range(bulk, count, 10_000):
        records = [
            (f"user-{n}", data.profile(rng)) for n in range(start, min(count, start + 10_000))
        ]
        results = bench.engine.upsert_profiles(bench.ws, records)
        assert all(result.ok for result in results)
    upsert_seconds = time.perf_counter() - started
    assert bench.engine.count(bench.ws) == count
    yield (
        f"- load: {bulk:,} profiles by the benchmark's bulk SQL path in {bulk_seconds:.1f} s"
        f" ({bulk / bulk_seconds:,.0f}/s); the last {count - bulk:,} through"
        f" `upsert_profiles` (10,000/batch) in {upsert_seconds:.1f} s"
        f" ({(count - bulk) / upsert_seconds:,.0f}/s, so {count:,} that way would take"
        f" ~{count / ((count - bulk) / upsert_seconds) / 60:.0f} min)"
    )


# 1. Batch evaluation.


def hand_written(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, BitMap]:
    out = {}
    cur = con.cursor()
    for key, (_, where) in workload.BATCH.items():
        pids = cur.execute(f"SELECT pid FROM {table} WHERE {where}").fetchnumpy()["pid"]
        out[key] = BitMap(array.array("I", np.ascontiguousarray(pids, np.uint32).tobytes()))
    cur.close()
    return out


def _rule_cache() -> Any:
    """Where the compiled-rule cache lives: ``services.evaluation.compiled`` since #12 split
    evaluation by mode, the module itself before (the bench also runs older trees)."""
    try:
        from audiences.services.evaluation import compiled  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return SimpleNamespace(
            frozen_schema=lambda schema: frozenset(schema.items()),
            bound=evaluation._bound,  # type: ignore[attr-defined,unused-ignore]
            compiled_sql=evaluation._compiled,  # type: ignore[attr-defined,unused-ignore]
            hook=evaluation._hook,  # type: ignore[attr-defined,unused-ignore]
            answerer=evaluation._answerer,  # type: ignore[attr-defined,unused-ignore]
            view=evaluation._view,  # type: ignore[attr-defined,unused-ignore]
        )
    return SimpleNamespace(
        frozen_schema=compiled.frozen_schema,
        bound=compiled._bound,
        compiled_sql=compiled.compiled_sql,
        hook=compiled.hook,
        answerer=compiled.answerer,
        view=compiled.view,
    )


def clear_rule_caches() -> None:
    """Forget every validated rule, compiled SQL and checked condition: a cold run."""
    cache = _rule_cache()
    cache.bound.cache_clear()
    cache.compiled_sql.cache_clear()
    duckdb_sql.checked_condition.cache_clear()


def ours_select(bench: Bench, *, cold: bool = True) -> dict[str, BitMap]:
    """Rules validated and compiled to SQL (caches cleared when cold), run, pids into bitmaps."""
    if cold:
        clear_rule_caches()
    with bench.factory() as session:
        schema = _rule_cache().frozen_schema(attributes.schema(session, workspace_id=bench.ws))
        return {
            key: evaluation.select_members(
                session,
                runtime=bench.runtime,
                workspace_id=bench.ws,
                rule=evaluation.bound_rule(rule, schema),
                now=NOW,
            )
            for key, (rule, _) in workload.BATCH.items()
        }


def ours_refresh(bench: Bench, *, cold: bool = True, together: bool = False) -> None:
    """The whole service path: ``refresh`` of each audience, membership and run committed;
    ``together``: the 20 in one ``refresh_many`` call (as ``refresh_all`` runs them)."""
    if cold:
        clear_rule_caches()
    with bench.factory.begin() as session:
        rows = bench.rows(session, list(workload.BATCH))
        if together:
            done = evaluation.refresh_many(
                session, runtime=bench.runtime, audiences=rows, trigger="bench"
            )
        else:
            done = [
                evaluation.refresh(session, runtime=bench.runtime, audience=row, trigger="bench")
                for row in rows
            ]
        assert all(run.status == "succeeded" for run in done), [run.error for run in done]


def batch(bench: Bench, count: int, repeat: int) -> Iterator[str]:
    table = bench.engine._workspace(bench.ws).table  # type: ignore[union-attr]
    # A cursor of the engine's own database: a second connect must repeat its configuration.
    con = bench.engine._con.cursor()
    con.execute("SET TimeZone = 'UTC'")
    reference = hand_written(con, table)
    assert ours_select(bench) == reference, "our SQL disagrees with the hand-written SQL"
    timings = rounds(
        repeat,
        {
            "hand-written DuckDB SQL x20, into bitmaps": lambda: hand_written(con, table),
            "ours: select_members x20, cold (validate, compile, check, run, bitmaps)": (
                lambda: ours_select(bench)
            ),
            "ours: select_members x20, warm (rules compiled by an earlier run)": (
                lambda: ours_select(bench, cold=False)
            ),
            "ours: refresh x20, cold (+ membership and runs stored, commit)": (
                lambda: ours_refresh(bench)
            ),
            "ours: refresh x20, warm": lambda: ours_refresh(bench, cold=False),
            "ours: refresh_many of the 20, cold (one call, as refresh_all)": (
                lambda: ours_refresh(bench, together=True)
            ),
            "ours: refresh_many of the 20, warm": (
                lambda: ours_refresh(bench, cold=False, together=True)
            ),
        },
    )
    con.close()
    with bench.factory() as session:
        stored = memberships.many(
            session, runtime=bench.runtime, audience_ids=[bench.ids[k] for k in workload.BATCH]
        )
        assert all(stored[bench.ids[k]] == reference[k] for k in workload.BATCH)
    checks = count * len(workload.BATCH)
    base = min(timings["hand-written DuckDB SQL x20, into bitmaps"])
    yield ""
    yield f"**1. Batch evaluation of 20 audiences** (best of {repeat} interleaved rounds;"
    yield "median and range in brackets)"
    yield ""
    yield "| path | seconds | profile·audience checks/s | vs hand-written |"
    yield "| --- | ---: | ---: | ---: |"
    for label, seconds in timings.items():
        best = min(seconds)
        yield (
            f"| {label} | {best:.3f} ({statistics.median(seconds):.3f}) |"
            f" {checks / best:,.0f} ({spread([checks / s for s in seconds])}) |"
            f" {base / best:.2f}x |"
        )
    members = sum(len(bitmap) for bitmap in reference.values())
    yield ""
    yield f"Members across the 20 audiences: {members:,}; all paths agree, bitmap for bitmap."


# 2. Streaming.


def streaming(bench: Bench, count: int, batches: int, seed: int, size: int) -> Iterator[str]:
    rng = random.Random(seed)
    service: list[float] = []
    engine_only: list[float] = []
    for n in range(batches):
        records = data.upsert_batch(rng, size, f"svc{n}", count)
        started = time.perf_counter()
        with bench.factory.begin() as session:
            results = profiles.upsert(
                session, caller=bench.caller, runtime=bench.runtime, records=records
            )
        service.append(time.perf_counter() - started)
        assert all(result.ok for result in results)
        records = data.upsert_batch(rng, size, f"eng{n}", count)
        started = time.perf_counter()
        bench.engine.upsert_profiles(bench.ws, records)
        engine_only.append(time.perf_counter() - started)
    yield from _upsert_rows(
        [
            ("in process: `profiles.upsert` (engine + 50 streaming audiences + commit)", service),
            ("in process: engine `upsert_profiles` alone (no audiences)", engine_only),
        ],
        size,
    )


def _upsert_rows(rows: list[tuple[str, list[float]]], size: int) -> Iterator[str]:
    for label, seconds in rows:
        yield (
            f"| {label} | {ms(statistics.median(seconds))} | {ms(pct(seconds, 0.95))} |"
            f" {size * len(seconds) / sum(seconds):,.0f} |"
            f" {spread([size / s for s in seconds])} |"
        )


def http_upserts(
    client: httpx.Client, args: argparse.Namespace, rng: random.Random
) -> Iterator[str]:
    """Section 2a over HTTP: ``POST /v1/profiles/batch`` with the in-process records mix."""
    upserts = []
    for n in range(args.stream_batches):
        records = data.upsert_batch(rng, args.stream_size, f"http{n}", args.profiles)
        body = orjson.dumps(
            {"profiles": [{"id": eid, "attributes": data.as_json(a)} for eid, a in records]}
        )
        started = time.perf_counter()
        response = client.post(
            "/v1/profiles/batch", content=body, headers={"Content-Type": "application/json"}
        )
        upserts.append(time.perf_counter() - started)
        if response.status_code != 200:
            raise RuntimeError(f"{response.status_code}: {response.text[:500]}")
    yield f"**2a over HTTP** ({args.stream_batches} calls, same records mix)"
    yield ""
    yield "| path | median ms/call | p95 ms | profiles/s overall | profiles/s per call |"
    yield "| --- | ---: | ---: | ---: | ---: |"
    yield from _upsert_rows(
        [("over HTTP: `POST /v1/profiles/batch`, one uvicorn worker", upserts)], args.stream_size
    )


def predicates(bench: Bench, seed: int, repeat: int) -> Iterator[str]:
    rng = random.Random(seed + 7)
    people = [data.profile(rng) for _ in range(20_000)]
    with bench.factory() as session:
        schema = _rule_cache().frozen_schema(attributes.schema(session, workspace_id=bench.ws))
    keyed = tuple((key, rule) for key, (rule, _) in workload.BATCH.items())
    compiled = evaluation.compiled_rules(keyed, schema)
    cache = _rule_cache()
    singles = [
        rules.to_predicate(evaluation.bound_rule(rule, schema), audience=cache.hook)
        for _, rule in keyed
    ]
    answer = cache.answerer({})
    view = cache.view

    def ours() -> list[tuple[bool, ...]]:
        # As ``evaluation.on_profiles_written`` runs it.
        check = compiled.answers
        if compiled.asks:
            return [check(view(attrs, pid, answer)) for pid, attrs in enumerate(people)]
        return [check(attrs) for attrs in people]

    def one_by_one() -> list[list[bool]]:
        out = []
        for pid, attrs in enumerate(people):
            profile = view(attrs, pid, answer)
            out.append([predicate(profile) for predicate in singles])
        return out

    def hand() -> list[list[bool]]:
        return [workload.hand_checks(attrs) for attrs in people]

    assert [list(answers) for answers in ours()] == hand(), "compiled rules disagree with hand"
    assert one_by_one() == hand(), "compiled predicates disagree with hand"
    timings = rounds(
        repeat,
        {
            "hand-written Python function (20 checks)": hand,
            "ours: the 20 rules compiled into one function (as streaming runs them)": ours,
            "before: 20 compiled predicates, one by one, on a profile view": one_by_one,
        },
    )
    base = min(timings["hand-written Python function (20 checks)"])
    yield ""
    yield f"**2b. 20 rules on one profile, in process** ({len(people):,} profiles,"
    yield f"best of {repeat})"
    yield ""
    yield "| path | µs per profile (20 rules) | profiles/s | vs hand-written |"
    yield "| --- | ---: | ---: | ---: |"
    for label, seconds in timings.items():
        best = min(seconds)
        yield (
            f"| {label} | {best / len(people) * 1e6:.2f} |"
            f" {len(people) / best:,.0f} ({spread([len(people) / s for s in seconds])}) |"
            f" {base / best:.2f}x |"
        )
    with bench.factory() as session:
        calls = []
        for attrs in people[:300]:
            started = time.perf_counter()
            evaluation.evaluate_profile(
                session,
                runtime=bench.runtime,
                workspace_id=bench.ws,
                attributes_=attrs,
                pid=None,
                explain=False,
            )
            calls.append(time.perf_counter() - started)
    yield ""
    yield (
        f"- for scale, the `POST /v1/evaluate` service (`evaluate_profile`, all {len(bench.ids)}"
        f" audiences, schema and memberships read from the database): median"
        f" {ms(statistics.median(calls))} ms, p99 {ms(pct(calls, 0.99))} ms per profile"
    )


# 3 and 4 in process: the route functions called directly (no HTTP, no auth).


def reads_in_process(bench: Bench, count: int, samples: int, seed: int) -> Iterator[str]:
    rng = random.Random(seed + 11)
    keys = list(bench.ids)
    everyone = bench.ids[workload.EVERYONE[0]]
    cursors = _cursors(rng, count, samples)

    def call(handler: Callable[[Session], Any]) -> Callable[[int], None]:
        def run(_: int) -> None:
            with bench.factory() as session:
                response = handler(session)
                session.commit()
            assert getattr(response, "status_code", 200) == 200

        return run

    member_asks = [
        (bench.ids[keys[n % len(keys)]], f"user-{rng.randrange(count)}") for n in range(samples)
    ]
    profile_asks = [f"user-{rng.randrange(count)}" for _ in range(samples)]

    def cached(found: object) -> None:
        assert found is not None, "not answered from the caches"

    handlers: dict[str, Callable[[int], None]] = {
        "is-member (service: metadata database and engine)": lambda n: call(
            lambda s: runs.is_member(
                s,
                caller=bench.caller,
                runtime=bench.runtime,
                audience_id=member_asks[n][0],
                external_id=member_asks[n][1],
                explain=False,
            )
        )(n),
        "is-member (from the process's caches, as the route answers a repeat)": lambda n: cached(
            runs.cached_is_member(
                bench.runtime,
                caller=bench.caller,
                audience_id=member_asks[n][0],
                external_id=member_asks[n][1],
            )
        ),
        "a profile's audiences (service)": lambda n: call(
            lambda s: profiles.audiences_of(
                s, caller=bench.caller, runtime=bench.runtime, external_id=profile_asks[n]
            )
        )(n),
        "a profile's audiences (from the caches)": lambda n: cached(
            profiles.cached_audiences_of(
                bench.runtime, caller=bench.caller, external_id=profile_asks[n]
            )
        ),
        "members page (limit 200)": lambda n: call(
            lambda s: member_routes.list_members(
                everyone, s, bench.caller, bench.runtime, limit=200, cursor=cursors[n], as_of=None
            )
        )(n),
    }
    results: dict[str, list[float]] = {}
    for label, handler in handlers.items():
        # The service runs first over every ask, which leaves the caches warm for the repeat.
        handler(0)
        results[label] = _timed(handler, samples)
    return_rows = []
    for label, seconds in results.items():
        return_rows.append(
            f"| {label} | in process (no HTTP, no auth) | {ms(pct(seconds, 0.5))} |"
            f" {ms(pct(seconds, 0.99))} | — | — | — |"
        )
    yield from return_rows


def _timed(run: Callable[[int], None], count: int) -> list[float]:
    out = []
    for n in range(count):
        started = time.perf_counter()
        run(n)
        out.append(time.perf_counter() - started)
    return out


def _cursors(rng: random.Random, count: int, samples: int) -> list[str | None]:
    """Cursors at random depths of the everyone audience (pids are 1..count when bulk-loaded)."""
    return [None] + [
        encode_cursor({"p": rng.randrange(1, count - 1000), "s": None}) for _ in range(samples)
    ]


# The HTTP half.


def over_http_all(bench: Bench, args: argparse.Namespace, folder: Path) -> Iterator[str]:
    count, seed = args.profiles, args.seed
    rng = random.Random(seed + 13)
    keys = list(bench.ids)
    everyone = bench.ids[workload.EVERYONE[0]]
    token = bench.token
    bench.close()
    headers = {"Authorization": f"Bearer {token}"}
    with (
        over_http.server(folder, folder / "server.log") as base,
        httpx.Client(base_url=base, headers=headers, timeout=60) as client,
    ):
        # 2. Streaming upserts over HTTP.
        upsert_rows = list(http_upserts(client, args, rng))
        if args.only_streaming:
            yield from upsert_rows
            return
        # 3 and 4: sequential latencies.
        member_paths = [
            f"/v1/audiences/{bench.ids[keys[n % len(keys)]]}/members/user-{rng.randrange(count)}"
            for n in range(1000)
        ]
        audience_paths = [
            f"/v1/profiles/user-{rng.randrange(count)}/audiences" for _ in range(1000)
        ]
        cursors = _cursors(rng, count, args.samples)
        page_paths = [
            f"/v1/audiences/{everyone}/members?limit={limit}"
            + (f"&cursor={cursor}" if cursor else "")
            for limit in (200, 50)
            for cursor in cursors
        ]
        targets: dict[str, list[str]] = {
            "is-member": member_paths,
            "a profile's audiences": audience_paths,
            "members page (limit 200)": page_paths[: len(cursors)],
            "members page (limit 50)": page_paths[len(cursors) :],
        }
        rows: dict[str, list[str]] = {}
        latencies: dict[str, list[float]] = {}
        for label, paths in targets.items():
            for path in paths[:20]:
                client.get(path)  # warm up (bitmap cache, connection)
            latencies[label] = over_http.latencies(
                lambda n, paths=paths: client.get(paths[n % len(paths)]), args.samples
            )
        loads: dict[str, list[over_http.Load]] = {label: [] for label in list(targets)[:2]}
        if over_http.wrk_available():
            for _ in range(args.http_rounds):
                for label in loads:
                    loads[label].append(
                        over_http.wrk(
                            base,
                            token,
                            targets[label][:1000],
                            folder,
                            seconds=args.http_seconds,
                            connections=args.connections,
                        )
                    )
        for label, seconds in latencies.items():
            runs = loads.get(label, [])
            if runs:
                rps = [load.rps for load in runs]
                loaded = f"{spread(rps)} | {spread([load.p99_ms for load in runs], '{:.1f}')}"
            else:
                loaded = "— | —"
            rows[label] = [
                f"| {label} | over HTTP (sequential, keep-alive) | {ms(pct(seconds, 0.5))} |"
                f" {ms(pct(seconds, 0.99))} | {loaded} |"
            ]
        for label in targets:
            yield from rows[label]
        timeouts = {label: sum(load.timeouts for load in runs) for label, runs in loads.items()}
        yield ""
        if not over_http.wrk_available():
            yield "**wrk was not found: no load was measured** (Debian: `apt-get install wrk`)."
        yield f"wrk timeouts (over 10 s): {timeouts}"
        yield ""
        yield from upsert_rows


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print a Markdown section ready for bench/README.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=20250101)
    parser.add_argument("--repeat", type=int, default=5, help="rounds of the batch comparisons")
    parser.add_argument("--upsert-sample", type=int, default=100_000)
    parser.add_argument("--stream-batches", type=int, default=30)
    parser.add_argument(
        "--stream-size", type=int, default=1000, help="records per upsert call (at most 10,000)"
    )
    parser.add_argument("--samples", type=int, default=1000, help="calls per latency")
    parser.add_argument("--http-seconds", type=float, default=5.0, help="per wrk run")
    parser.add_argument("--http-rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8, help="wrk connections")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument(
        "--reads-only", action="store_true", help="skip sections 1 and 2 (batch, streaming)"
    )
    parser.add_argument(
        "--only-predicates", action="store_true", help="run only 2b (no profiles loaded)"
    )
    parser.add_argument(
        "--only-batch", action="store_true", help="stop after section 1 (batch evaluation)"
    )
    parser.add_argument(
        "--only-streaming",
        action="store_true",
        help="run only section 2a (upserts in process and over HTTP)",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.data_dir) as folder:
        report = only_predicates if args.only_predicates else run
        for line in report(Path(folder), args):
            print(line, flush=True)


def _streaming_section(bench: Bench, args: argparse.Namespace) -> Iterator[str]:
    size = args.stream_size
    yield ""
    yield f"**2a. Profile upserts, {size:,} records per call** ({args.stream_batches} calls each:"
    yield (
        f"{size // 2:,} new ids, {size - size // 2:,} updates of random profiles;"
        " 50 streaming audiences defined)"
    )
    yield ""
    yield (
        "| path | median ms/call | p95 ms | profiles/s overall |"
        " profiles/s per call: median (range) |"
    )
    yield "| --- | ---: | ---: | ---: | ---: |"
    yield from streaming(bench, args.profiles, args.stream_batches, args.seed, size)


def only_predicates(folder: Path, args: argparse.Namespace) -> Iterator[str]:
    """Section 2b alone, on a workspace with the audiences but no profiles."""
    yield f"Machine: {machine()}; load average at start {load_average()}"
    bench = Bench(folder)
    bench.create_audiences({key: rule for key, (rule, _) in workload.BATCH.items()}, "manual")
    bench.create_audiences(workload.streaming_rules(), "streaming")
    yield from predicates(bench, args.seed, args.repeat)
    yield ""
    yield f"Load average at the end: {load_average()}"


def run(folder: Path, args: argparse.Namespace) -> Iterator[str]:
    """The benchmark itself, yielding report lines as results arrive."""
    count = args.profiles
    parts = [".venv/bin/python", "-m", "bench.membership.run", *sys.argv[1:]]
    command = " ".join(shlex.quote(part) for part in parts)
    yield f"### {count:,} profiles ({datetime.now(UTC).date().isoformat()})"
    yield ""
    yield f"Command: `{command}`"
    yield ""
    yield f"Machine: {machine()}; load average at start {load_average()}"
    yield ""
    bench = Bench(folder)
    yield from load(bench, count, min(args.upsert_sample, count))
    bench.create_audiences({key: rule for key, (rule, _) in workload.BATCH.items()}, "manual")
    bench.create_audiences(dict([workload.EVERYONE]), "manual")
    bench.create_audiences(workload.streaming_rules(), "streaming")
    started = time.perf_counter()
    with bench.factory.begin() as session:
        runs = evaluation.refresh_all(
            session, runtime=bench.runtime, workspace_id=bench.ws, trigger="bench"
        )
    assert all(run.status == "succeeded" for run in runs)
    yield (
        f"- first `refresh_all` of all {len(runs)} audiences (20 batch, 50 streaming, one of"
        f" every profile): {time.perf_counter() - started:.1f} s"
    )
    if args.only_streaming:
        yield from _streaming_section(bench, args)
        yield from over_http_all(bench, args, folder)
        yield ""
        yield f"Load average at the end: {load_average()}"
        return
    if not args.reads_only:
        yield from batch(bench, count, args.repeat)
        if args.only_batch:
            bench.close()
            yield ""
            yield f"Load average at the end: {load_average()}"
            return
        yield from _streaming_section(bench, args)
        yield from predicates(bench, args.seed, args.repeat)
    yield ""
    yield (
        f"**3, 4. Reads** (p50/p99 of {args.samples:,} sequential calls; under load: wrk, one"
        f" thread, {args.connections} connections, {args.http_seconds:.0f} s,"
        f" {args.http_rounds} rounds: median (range); timeouts are requests over 10 s)"
    )
    yield ""
    yield ("| request | how | p50 ms | p99 ms | requests/s under load | p99 ms under load |")
    yield "| --- | --- | ---: | ---: | ---: | ---: |"
    yield from reads_in_process(bench, count, args.samples, args.seed)
    yield from over_http_all(bench, args, folder)
    yield ""
    yield f"Load average at the end: {load_average()}"


if __name__ == "__main__":
    main()
