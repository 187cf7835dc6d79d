"""Imports survive SIGKILL: a real server (whose workers own the profile data) killed at random
points of running imports and restarted, until every import completes exactly once.

With the embedded DuckDB engine, the process that runs import jobs is the server that owns the
profile file, so the server is what gets killed. Leases are short, so a killed attempt's job is
reaped and resumed from its last checkpoint by the restarted server.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from audiences.store.tables import JobRow
from tests.databases import DATABASE_ENV
from tests.e2e.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
WAIT_SECONDS = 60


class Server:
    """``audiences serve`` on a port of its own, restartable, killed with SIGKILL."""

    def __init__(self, data_dir: Path, database_url: str, threads: int, log: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.log = log
        self.env = {
            **os.environ,
            "AUDIENCES_DATABASE_URL": database_url,
            "AUDIENCES_WORKER_THREADS": str(threads),
            "AUDIENCES_JOB_LEASE_SECONDS": "0.6",
            "AUDIENCES_JOB_POLL_SECONDS": "0.05",
            "AUDIENCES_JOB_BACKOFF_SECONDS": "0",
            "AUDIENCES_JOB_MAX_ATTEMPTS": "100",
            "AUDIENCES_IMPORT_CHUNK_ROWS": "2000",
            "AUDIENCES_IMPORT_RANGE_ROWS": "2000",
            "AUDIENCES_SCHEDULER_SECONDS": "0",
            "AUDIENCES_RATE_LIMIT": "100000/minute",
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.port}"
        self.clients: list[httpx.Client] = []

    def client(self, token: str) -> httpx.Client:
        """A client of this server with ``token``, closed by the fixture even if a test fails
        (a socket left open warns in whichever later test collects it)."""
        made = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        self.clients.append(made)
        return made

    def token(self) -> str:
        made = subprocess.run(
            [
                sys.executable,
                "-m",
                "audiences",
                "keys",
                "create",
                "--workspace",
                "crash",
                "--data-dir",
                str(self.data_dir),
            ],
            capture_output=True,
            text=True,
            env=self.env,
            check=True,
            cwd=ROOT,
        )
        return made.stdout.strip().splitlines()[0]

    def start(self) -> None:
        command = [sys.executable, "-m", "audiences", "serve", "--port", str(self.port)]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [*command, "--data-dir", str(self.data_dir)],
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        _wait_for(self._ready, "the server never became ready")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def _ready(self) -> bool:
        assert self.process is not None
        assert self.process.poll() is None, self.log.read_text()[-2000:]
        try:
            return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False


@pytest.fixture
def make_server(isolated_database_url: str, tmp_path: Path) -> Iterator[Callable[[int], Server]]:
    made: list[Server] = []

    def make(threads: int) -> Server:
        server = Server(tmp_path / "data", isolated_database_url, threads, tmp_path / "server.log")
        made.append(server)
        return server

    yield make
    for server in made:
        for client in server.clients:
            client.close()
        server.stop()


def _wait_for(condition: Callable[[], bool], message: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.02)


def _file(path: Path, rows: int, seed: int) -> tuple[set[str], set[int]]:
    """A CSV of ``rows`` rows, every tenth one bad, some ids twice; its valid ids, bad rows."""
    rng = random.Random(seed)
    valid: set[str] = set()
    bad: set[int] = set()
    lines = ["id,source"]
    for number in range(1, rows + 1):
        if number % 10 == 0:
            bad.add(number)
            lines.append(rng.choice(["", "x" * 513, '"\x01ctl"']) + ",crm")
            continue
        external = f"user-{seed}-{rng.randrange(rows)}"
        valid.add(external)
        lines.append(f"{external},crm")
    path.write_text("\n".join(lines) + "\n")
    return valid, bad


def _jobs(factory: sessionmaker[Session], ids: list[str]) -> list[JobRow]:
    with factory() as session:
        rows = [session.get_one(JobRow, job_id) for job_id in ids]
        session.expunge_all()
        return rows


def _run_with_kills(
    server: Server,
    factory: sessionmaker[Session],
    job_ids: list[str],
    kills: int,
    rng: random.Random,
) -> int:
    """Kill the server at random points while imports run, restarting it each time; the
    number of kills that landed mid-import. Asserts that progress never goes backwards."""
    seen = dict.fromkeys(job_ids, 0)
    landed = 0

    def observe() -> list[JobRow]:
        rows = _jobs(factory, job_ids)
        for row in rows:
            assert row.processed >= seen[row.id], "progress went backwards"
            seen[row.id] = row.processed
        return rows

    for _ in range(kills):
        if all(row.state == "succeeded" for row in observe()):
            break
        _wait_for(
            lambda: (
                any(row.state == "running" for row in observe())
                or all(row.state == "succeeded" for row in observe())
            ),
            "no import was running",
        )
        time.sleep(rng.uniform(0.0, 0.4))
        if any(row.state == "running" for row in observe()):
            landed += 1
        server.kill()
        server.start()
    _wait_for(
        lambda: all(row.state in ("succeeded", "failed") for row in observe()),
        "the imports never finished",
    )
    return landed


def _check(
    client: httpx.Client, job: JobRow, audience_id: str, valid: set[str], bad: set[int]
) -> None:
    assert job.state == "succeeded", (job.last_error, job.errors[-3:])
    total = len(valid) + len(bad)
    rows = job.counts["rows"]
    assert job.counts["invalid"] == len(bad)
    assert job.counts["added"] == len(valid)
    assert job.counts["duplicates"] == rows - len(bad) - len(valid)
    assert job.result["indexing_state"] == "applied"
    assert total <= rows and job.processed == job.total == rows
    exported = client.get(f"/v1/audiences/{audience_id}/export").text.splitlines()[1:]
    assert len(exported) == len(valid) and set(exported) == valid
    errors = client.get(f"/v1/jobs/{job.id}/errors.csv").text.splitlines()[1:]
    assert sorted(int(line.split(",")[0]) for line in errors) == sorted(bad)
    row_errors = [e for e in job.errors if e["code"] != "lease_expired"]
    assert len(row_errors) == min(len(bad), 1000 - (len(job.errors) - len(row_errors)))


def _start_imports(
    server: Server, tmp_path: Path, count: int, rows: int
) -> tuple[httpx.Client, list[tuple[str, str, set[str], set[int]]]]:
    client = server.client(server.token())
    started = []
    for index in range(count):
        valid, bad = _file(tmp_path / f"list-{index}.csv", rows, seed=index)
        created = client.post(
            "/v1/audiences", json={"key": f"list-{index}", "name": "list", "kind": "static"}
        )
        audience_id = created.json()["id"]
        with (tmp_path / f"list-{index}.csv").open("rb") as body:
            accepted = client.post(
                f"/v1/audiences/{audience_id}/imports",
                content=body.read(),
                headers={"Content-Type": "text/csv"},
            )
        assert accepted.status_code == 202, accepted.text
        started.append((accepted.json()["id"], audience_id, valid, bad))
    return client, started


def test_an_import_killed_20_times_completes_exactly_once(
    make_server: Callable[[int], Server],
    isolated_factory: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    server = make_server(1)
    server.start()
    client, started = _start_imports(server, tmp_path, count=1, rows=200_000)
    landed = _run_with_kills(server, isolated_factory, [started[0][0]], 20, random.Random(7))
    # How many kills land mid-import depends on how fast imports are; the outcome does not.
    job_id, audience_id, valid, bad = started[0]
    job = _jobs(isolated_factory, [job_id])[0]
    _check(client, job, audience_id, valid, bad)
    assert job.attempts >= landed  # an attempt killed mid-import was retried
    client.close()


@pytest.mark.skipif(not os.environ.get(DATABASE_ENV), reason="two workers on PostgreSQL")
def test_two_workers_on_postgresql_process_each_import_once(
    make_server: Callable[[int], Server],
    isolated_factory: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    server = make_server(2)
    server.start()
    client, started = _start_imports(server, tmp_path, count=3, rows=60_000)
    _run_with_kills(server, isolated_factory, [s[0] for s in started], 10, random.Random(11))
    jobs = _jobs(isolated_factory, [s[0] for s in started])
    for job, (_, audience_id, valid, bad) in zip(jobs, started, strict=True):
        _check(client, job, audience_id, valid, bad)
    client.close()
