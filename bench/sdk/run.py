"""The SDK and the command line against the bare tools, on one real server:

    python -m bench.sdk.run [--quick | --full] [--rounds N] [--members N] [--ids N]

1. **Members iterator**: every member of an audience (quick 100,000, full 1,000,000), paged
   200 at a time, through ``client.audiences.members(a)`` against a hand-written httpx loop over
   the same pages (``bench/sdk/clients.py``).
2. **Id import**: a file of ids (quick 1,000,000, full 10,000,000) uploaded into a static
   audience (``mode=replace``) by ``audiences import FILE --into A`` against
   ``curl --data-binary @FILE`` to the same route. Measured twice: the upload alone (the
   client's own work: ``--no-wait`` against curl, until the 202), and end to end (the CLI
   waiting for the job with its progress, against curl then the same job polled by a bare
   loop on the SDK's schedule: 0.05 s, doubling to 0.5 s).

Each client runs as a process of its own; its peak memory is its maximum resident set
(``wait4``). Rounds alternate which client goes first; figures are medians over the rounds.
The server is ``bench/http/server.py`` on this tree (``bench/http/servers.py``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from audiences.sdk import Client
from bench.http.servers import REPO, Tree, start

TIME = "/usr/bin/time"
SIZES = {"quick": (100_000, 1_000_000), "full": (1_000_000, 10_000_000)}


@dataclass
class Measured:
    """One client run: wall seconds and peak resident memory."""

    seconds: float
    peak_mib: float
    output: str


def measure(command: list[str], env: dict[str, str]) -> Measured:
    """Run ``command`` and return its wall time and its own peak memory, as GNU time reports
    it (``wait4`` from this process would count this process's own size: Linux keeps the
    high-water mark of the memory a vfork-ed child execs from)."""
    with tempfile.NamedTemporaryFile("r") as peak:
        started = time.perf_counter()
        done = subprocess.run(
            [TIME, "-f", "%M", "-o", peak.name, *command], env=env, capture_output=True
        )
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"{command[:4]} failed: {done.stderr.decode()[-2000:]}")
        return Measured(seconds, int(peak.read().split()[-1]) / 1024, done.stdout.decode())


def ids_file(path: Path, count: int) -> Path:
    """A text file of ``count`` ids, one per line."""
    with path.open("w") as out:
        for start_ in range(0, count, 100_000):
            out.write("".join(f"bench-{n}\n" for n in range(start_, min(count, start_ + 100_000))))
    return path


def wait_job(url: str, key: str, job_id: str) -> None:
    """A bare polling loop on the schedule the SDK's ``wait`` keeps (0.05 s, doubling to every
    0.5 s), so neither side gains by looking sooner, until the job has finished."""
    headers = {"Authorization": f"Bearer {key}"}
    delay = 0.05
    while True:
        job = httpx.get(f"{url}/v1/jobs/{job_id}", headers=headers, timeout=30).json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            if job["state"] != "succeeded":
                raise RuntimeError(f"job {job_id} {job['state']}: {job['last_error']}")
            return
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def curl(url: str, key: str, audience_id: str, path: Path) -> list[str]:
    """The reference upload: curl sending the file as the raw body."""
    return [
        "curl", "-sS", "--fail-with-body", "-X", "POST", "--data-binary", f"@{path}",
        "-H", f"Authorization: Bearer {key}", "-H", "Content-Type: text/plain",
        f"{url}/v1/audiences/{audience_id}/imports?mode=replace",
    ]  # fmt: skip


def cli(audience_id: str, path: Path, *, wait: bool) -> list[str]:
    """The measured upload: ``audiences import``."""
    command = [sys.executable, "-m", "audiences", "import", str(path), "--into", audience_id]
    return [*command, "--mode", "replace", "--json", "--wait" if wait else "--no-wait"]


def fresh_audience(url: str, key: str, name: str) -> str:
    """A new, empty static audience's id."""
    with Client(url, key=key) as client:
        return client.audiences.create(key=f"target-{name}", name=name, kind="static").id


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    """Start a server, seed the audiences, run the rounds, print the tables."""
    parser = argparse.ArgumentParser()
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="100,000 members, 1,000,000 ids")
    group.add_argument("--full", action="store_true", help="1,000,000 members, 10,000,000 ids")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--members", type=int, help="Members to iterate (overrides the mode).")
    parser.add_argument("--ids", type=int, help="Ids to import (overrides the mode).")
    args = parser.parse_args()
    members, imported = SIZES["full" if args.full else "quick"]
    members, imported = args.members or members, args.ids or imported
    tree = Tree(REPO / "src")
    with tempfile.TemporaryDirectory(prefix="bench-sdk-") as folder:
        server = start(tree, "sdk", Path(folder) / "server")
        try:
            run(server.port, server.token, tree, Path(folder), members, imported, args.rounds)
        finally:
            server.stop()


def run(
    port: int, key: str, tree: Tree, folder: Path, members: int, imported: int, rounds: int
) -> None:
    """The two measurements on a running server."""
    url = f"http://127.0.0.1:{port}"
    env = {**tree.environment(), "AUDIENCES_URL": url, "AUDIENCES_API_KEY": key}
    with Client(url, key=key, timeout=600) as client:
        listed = client.audiences.create(key="listed", name="Listed", kind="static")
        job = client.imports.create(listed, ids_file(folder / "members.txt", members))
        client.jobs.wait(job)
    big = ids_file(folder / "ids.txt", imported)
    with Client(url, key=key, timeout=600) as client:
        # Every id becomes a profile once, before the rounds, so every measured import does
        # the same work (the first would create 10M profiles, the others only find them).
        client.jobs.wait(client.imports.create(fresh_audience(url, key, "warm-up"), big))
    print(f"server {tree.commit}; {members:,} members; {imported:,} ids ({big.stat().st_size:,} B)")
    results: dict[str, list[Measured]] = {}
    warm_up = [sys.executable, "-m", "bench.sdk.clients", "members-httpx", url, key, listed.id]
    measure(warm_up, env)  # the first pass fills the server's caches for both

    def record(name: str, measured: Measured) -> None:
        results.setdefault(name, []).append(measured)

    for number in range(rounds):
        order = ["members-sdk", "members-httpx"]
        for name in order if number % 2 == 0 else order[::-1]:
            command = [sys.executable, "-m", "bench.sdk.clients", name, url, key, listed.id]
            measured = measure(command, env)
            reported = json.loads(measured.output)
            assert reported["count"] == members, measured.output
            record(name, Measured(reported["seconds"], measured.peak_mib, ""))
            record(name + "-process", measured)
        steps = ["curl", "cli"] if number % 2 == 0 else ["cli", "curl"]
        for step in steps:
            # A new audience for every upload: the CLI derives its idempotency key from the
            # file and the audience, so a second upload of the same file into the same
            # audience would be answered with the first one's job instead of importing.
            target = fresh_audience(url, key, f"{step}-{number}")
            if step == "curl":
                uploaded = measure(curl(url, key, target, big), env)
                started = time.perf_counter()
                wait_job(url, key, json.loads(uploaded.output)["id"])
                record("upload-curl", uploaded)
                total = uploaded.seconds + time.perf_counter() - started
                record("import-curl", Measured(total, uploaded.peak_mib, ""))
            else:
                uploaded = measure(cli(target, big, wait=False), env)
                wait_job(url, key, json.loads(uploaded.output)["id"])
                record("upload-cli", uploaded)
                target = fresh_audience(url, key, f"{step}-{number}-wait")
                record("import-cli", measure(cli(target, big, wait=True), env))
    startup = [measure([sys.executable, "-m", "audiences", "--help"], env) for _ in range(rounds)]
    results["startup"] = startup
    report(results, members, imported)


def report(results: dict[str, list[Measured]], members: int, imported: int) -> None:
    """The table: medians, ranges, ratios against the reference."""
    rows = [
        ("members iterator", members, "members-sdk", "members-httpx"),
        (
            "members iterator, whole process",
            members,
            "members-sdk-process",
            "members-httpx-process",
        ),
        ("id upload (until 202)", imported, "upload-cli", "upload-curl"),
        ("id import end to end", imported, "import-cli", "import-curl"),
    ]
    print("| measurement | ours | reference | ours / reference | peak MiB ours / reference |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for title, count, ours, reference in rows:
        mine = median([m.seconds for m in results[ours]])
        theirs = median([m.seconds for m in results[reference]])
        peak = max(m.peak_mib for m in results[ours]), max(m.peak_mib for m in results[reference])
        print(
            f"| {title} ({count:,}) | {count / mine:,.0f}/s ({mine:.2f} s) "
            f"| {count / theirs:,.0f}/s ({theirs:.2f} s) | **{theirs / mine:.2f}\u00d7** "
            f"| {peak[0]:.0f} / {peak[1]:.0f} |"
        )
    started = median([m.seconds for m in results["startup"]])
    peak_startup = max(m.peak_mib for m in results["startup"])
    print(f"| `audiences --help` (start-up alone) | {started:.2f} s | | | {peak_startup:.0f} |")


if __name__ == "__main__":
    main()
