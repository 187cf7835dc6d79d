"""Section 4: memory while a file of events is imported, at several sizes.

    .venv/bin/python -m bench.events.run --only imports                     # 1M and 5M events
    .venv/bin/python -m bench.events.run --only imports --import-sizes 50000000

For each size, a gzipped NDJSON file of demo-like events (one ``POST /v1/events`` object a
line, ten events a profile, written by DuckDB from the same hashes as section 1's data; gzipped
as a user would send a large file: 50M events are 7.6 GB as text, over the default 4 GiB
``AUDIENCES_MAX_UPLOAD_BYTES``, and about a tenth of that gzipped) is uploaded to
``POST /v1/events/imports`` of a fresh server process, and its ``events.import`` job is polled
until it finishes. The server's resident memory (``VmRSS`` in ``/proc/<pid>/status``) is sampled
every 50 ms from the upload's start to the job's end: flat means its peak does not grow with
the file. Beside it, the same file loaded by DuckDB alone (``read_ndjson`` into an events table,
in a process of its own with the server's DuckDB ``memory_limit``): its time and peak memory.
The server's CPU time (every thread's, from ``/proc/<pid>/stat``) over the upload and the job
is shown per event: on a shared machine it moves far less than the wall-clock time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import httpx

from audiences.engines import duckdb_sql
from bench.events import data
from bench.http import servers

SAMPLE_SECONDS = 0.05
POLL_SECONDS = 0.5
CHUNK = 5_000_000
FILE = "events.ndjson.gz"


def write_file(path: Path, count: int) -> None:
    """``count`` events of ``count // 10`` profiles as NDJSON, by DuckDB (staged in a file of
    its own beside ``path``, dropped after)."""
    profiles = max(1, count // 10)
    staging = path.with_suffix(".duckdb")
    con = duckdb.connect(str(staging))
    con.execute("SET TimeZone = 'UTC'")
    con.execute(duckdb_sql.create_events_table("x"))
    for name, kind in data.PROPERTIES.items():
        con.execute(duckdb_sql.add_column("x", name, kind))
    for start in range(0, count, CHUNK):
        con.execute(data.bulk_sql("x", profiles, start, min(count, start + CHUNK)))
    props = ", ".join(f"'{name}': {name}" for name in data.PROPERTIES)
    con.execute(
        f"""COPY (
  SELECT 'u' || pid AS profile_id, event,
         strftime("timestamp", '%Y-%m-%dT%H:%M:%SZ') AS "timestamp", {{{props}}} AS properties
  FROM x
) TO '{path}' (FORMAT JSON, COMPRESSION gzip)"""
    )
    con.close()
    staging.unlink()


class Sampler:
    """The resident memory of one process, sampled on a thread of its own."""

    def __init__(self, pid: int) -> None:
        self.status = Path(f"/proc/{pid}/status")
        self.peak = 0
        self.samples: list[tuple[float, int]] = []
        """(seconds since the start, resident bytes) every sample, to show the curve."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def cpu(self) -> float:
        """The process's CPU seconds so far, user and system, every thread's."""
        fields = self.status.with_name("stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss(self) -> int:
        """The process's resident memory now, in bytes."""
        for line in self.status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def _run(self) -> None:
        started = time.perf_counter()
        while not self._stop.is_set():
            rss = self.rss()
            self.samples.append((time.perf_counter() - started, rss))
            self.peak = max(self.peak, rss)
            time.sleep(SAMPLE_SECONDS)

    def peak_by_tenth(self) -> list[int]:
        """The peak resident memory in each tenth of the sampled time: flat when the tenths
        after the first few stay level."""
        if not self.samples:
            return []
        end = self.samples[-1][0] or 1.0
        tenths = [0] * 10
        for at, rss in self.samples:
            index = min(9, int(at / end * 10))
            tenths[index] = max(tenths[index], rss)
        return tenths

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


@dataclass(frozen=True)
class Imported:
    """One import: its size, times and the server's memory."""

    count: int
    megabytes: float
    upload_seconds: float
    job_seconds: float
    rss_before: int
    rss_peak: int
    rss_after: int
    counts: dict[str, int]
    cpu_seconds: float
    tenths: list[int]


def import_once(folder: Path, count: int) -> Imported:
    """Upload a file of ``count`` events to a fresh server and wait for its import job."""
    folder.mkdir(parents=True)
    path = folder / FILE
    write_file(path, count)
    server = servers.start(servers.Tree.parse("src"), "imports", folder / "server")
    url = f"http://127.0.0.1:{server.port}"
    headers = {"Authorization": f"Bearer {server.token}"}
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=600) as client:
            for name, kind in data.PROPERTIES.items():
                client.put(f"/v1/event-properties/{name}", json={"type": kind}).raise_for_status()
            sampler = Sampler(server.process.pid)
            before = sampler.rss()
            cpu = sampler.cpu()
            with sampler, path.open("rb") as body:
                started = time.perf_counter()
                answer = client.post(
                    "/v1/events/imports",
                    content=body,
                    headers={"Content-Type": "application/x-ndjson"},
                )
                if answer.status_code != 202:
                    raise RuntimeError(f"import refused: {answer.status_code} {answer.text}")
                uploaded = time.perf_counter()
                job = _wait(client, answer.json()["id"])
                finished = time.perf_counter()
            after = sampler.rss()
            cpu = sampler.cpu() - cpu
    finally:
        server.stop()
    if job["state"] != "succeeded":
        raise RuntimeError(f"the import job ended {job['state']}: {job}")
    return Imported(
        count,
        path.stat().st_size / 1e6,
        uploaded - started,
        finished - uploaded,
        before,
        sampler.peak,
        after,
        dict(job.get("counts") or {}),
        cpu,
        sampler.peak_by_tenth(),
    )


def _wait(client: httpx.Client, job_id: str) -> dict[str, object]:
    while True:
        job: dict[str, object] = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(POLL_SECONDS)


REFERENCE = """
import resource, sys, time, duckdb
from audiences.engines import duckdb_sql
from audiences.schemas.attributes import AttributeType as T
con = duckdb.connect(sys.argv[1])
con.execute("SET TimeZone = 'UTC'")
con.execute("SET memory_limit = '256MB'")
con.execute("SET enable_progress_bar = false")
con.execute(duckdb_sql.create_events_table("e"))
for name in ("page", "sku", "channel"):
    con.execute(duckdb_sql.add_column("e", name, T.STRING))
con.execute(duckdb_sql.add_column("e", "amount", T.FLOAT))
started = time.perf_counter()
con.execute(
    'INSERT INTO e (pid, event, "timestamp", received_at, page, sku, amount, channel)'
    " SELECT hash(profile_id) % 4294967291, event, \\"timestamp\\"::TIMESTAMPTZ, now(),"
    " properties.page, properties.sku, properties.amount, properties.channel"
    " FROM read_ndjson(?, columns = {profile_id: 'VARCHAR', event: 'VARCHAR',"
    " \\"timestamp\\": 'VARCHAR', properties: 'STRUCT(page VARCHAR, sku VARCHAR,"
    " amount DOUBLE, channel VARCHAR)'})",
    [sys.argv[2]],
)
con.execute("CHECKPOINT")
seconds = time.perf_counter() - started
print(seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def reference(folder: Path, count: int) -> tuple[float, int]:
    """DuckDB alone loading the same file into an events table: seconds and peak bytes."""
    path = folder / FILE
    if not path.exists():
        write_file(path, count)
    env = servers.Tree.parse("src").environment()
    done = subprocess.run(
        [sys.executable, "-c", REFERENCE, str(folder / "reference.duckdb"), str(path)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    seconds, peak = done.stdout.splitlines()[-1].split()
    return float(seconds), int(peak)


def run(folder: Path, sizes: list[int]) -> Iterator[str]:
    """Section 4: one import per size, each beside DuckDB loading the same file."""
    yield ""
    yield (
        "**4. Event file imports**: NDJSON through `POST /v1/events/imports` (the"
        " `events.import` job on the server's embedded workers), one fresh server per size;"
        " RSS of the server process sampled every 50 ms"
    )
    yield ""
    yield (
        "| events | gzipped file MB | upload s | import s | events/s | server CPU µs per event |"
        " server RSS before | peak | after | DuckDB `read_ndjson` s | DuckDB peak |"
    )
    yield "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    curves: list[tuple[int, list[int]]] = []
    for count in sizes:
        at = folder / f"import-{count}"
        ours = import_once(at, count)
        ref_seconds, ref_peak = reference(at, count)
        (at / FILE).unlink()
        written = ours.counts.get("written", 0)
        if written != count:
            raise RuntimeError(f"{written:,} of {count:,} events written: {ours.counts}")
        yield (
            f"| {count:,} | {ours.megabytes:,.0f} | {ours.upload_seconds:.1f} |"
            f" {ours.job_seconds:.1f} | {count / ours.job_seconds:,.0f} |"
            f" {ours.cpu_seconds / count * 1e6:.1f} | {_mb(ours.rss_before)} |"
            f" {_mb(ours.rss_peak)} | {_mb(ours.rss_after)} | {ref_seconds:.1f} |"
            f" {_mb(ref_peak)} |"
        )
        curves.append((count, ours.tenths))
    yield ""
    yield "The server's peak resident memory in each tenth of the upload and import (MiB):"
    yield ""
    yield "| events | " + " | ".join(f"{n}/10" for n in range(1, 11)) + " |"
    yield "| ---: |" + " ---: |" * 10
    for count, tenths in curves:
        yield f"| {count:,} | " + " | ".join(f"{t / 2**20:,.0f}" for t in tenths) + " |"


def _mb(size: int) -> str:
    return f"{size / 2**20:,.0f} MiB"
