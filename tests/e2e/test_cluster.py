"""Beyond one process: two API servers and two workers share one PostgreSQL database, for the
metadata and the profiles alike (docs/deploy.md, "Single server").

The test writes through one API and reads through the other, kills the worker that holds an
import in the middle of it and checks the other finishes it with nothing lost, and checks that a
key revoked through one API stops working on the other within the documented cache bound.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from audiences.sdk import Client
from audiences.sdk.errors import Unauthorized
from tests.e2e.conftest import cli, free_port

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        bool(os.environ.get("AUDIENCES_TEST_DATABASE_URL")),
        reason="makes a PostgreSQL database of its own whatever the session's: run once, in "
        "the default pass",
    ),
]

POSTGRES_URL = os.environ.get(
    "AUDIENCES_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
LEASE_SECONDS = 2.0
READ_CACHE_SECONDS = 1.0
WAIT_SECONDS = 90
IMPORTED_IDS = 60_000


@pytest.fixture
def cluster_database() -> Iterator[str]:
    """A PostgreSQL database of the test's own, dropped at the end."""
    name = f"audiences_cluster_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Cluster:
    """The processes of one cluster, all on one database; every one stopped at the end."""

    def __init__(self, database: str, folder: Path, stack: ExitStack) -> None:
        self.folder = folder
        self.stack = stack
        self.env = {
            **os.environ,
            "AUDIENCES_DATABASE_URL": database.replace("postgresql://", "postgresql+psycopg://"),
            "AUDIENCES_PROFILE_ENGINE": "postgres",
            "AUDIENCES_PROFILE_ENGINE_URL": database,
            "AUDIENCES_JOB_LEASE_SECONDS": str(LEASE_SECONDS),
            "AUDIENCES_JOB_POLL_SECONDS": "0.1",
            "AUDIENCES_JOB_BACKOFF_SECONDS": "0",
            "AUDIENCES_READ_CACHE_SECONDS": str(READ_CACHE_SECONDS),
            "AUDIENCES_IMPORT_CHUNK_ROWS": "2000",
            "AUDIENCES_RATE_LIMIT": "100000/minute",
        }
        self.processes: list[subprocess.Popen[str]] = []

    def start(self, *args: str) -> tuple[subprocess.Popen[str], Path]:
        """Start ``audiences ARGS`` with the cluster's settings; output goes to a log file."""
        log = self.folder / f"process-{len(self.processes)}.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "audiences", *args, "--data-dir", str(self.folder / "data")],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=self.stack.enter_context(log.open("w")),
            text=True,
        )
        self.processes.append(process)
        return process, log

    def api(self) -> str:
        """Start an API process that runs no jobs itself; its base URL once it is ready."""
        port = free_port()
        process, log = self.start("serve", "--port", str(port))
        base = f"http://127.0.0.1:{port}"
        _wait(lambda: _ready(base), f"API never became ready: {log.read_text()}", process)
        return base

    def worker(self) -> tuple[subprocess.Popen[str], Path]:
        """Start a worker process and wait until it runs."""
        process, log = self.start("worker", "--threads", "2")
        _wait(lambda: "worker(s) running" in log.read_text(), f"{log} never started", process)
        return process, log

    def stop(self) -> None:
        """Stop every process, gracefully first."""
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def cluster(cluster_database: str, tmp_path: Path) -> Iterator[Cluster]:
    """A cluster on a database of its own; API processes run no jobs (workers do)."""
    with ExitStack() as stack:
        running = Cluster(cluster_database, tmp_path, stack)
        running.env["AUDIENCES_WORKER_THREADS"] = "0"
        try:
            yield running
        finally:
            running.stop()


def test_two_apis_and_two_workers_share_one_postgresql_database(
    cluster: Cluster, tmp_path: Path
) -> None:
    first_api = cluster.api()
    second_api = cluster.api()
    minted = cli(
        "keys",
        "create",
        "--workspace",
        "acme",
        "--data-dir",
        str(tmp_path / "data"),
        env=cluster.env,
    )
    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.strip()
    writer = cluster.stack.enter_context(Client(first_api, key=token))
    reader = cluster.stack.enter_context(Client(second_api, key=token))

    # Written through one API, computed where the profiles are, read through the other.
    profiles = [
        {"id": f"u{n}", "attributes": {"age": n % 90, "plan": "pro" if n % 3 else "free"}}
        for n in range(3000)
    ]
    for start in range(0, len(profiles), 1000):
        assert writer.profiles.upsert_many(profiles[start : start + 1000]).failed == 0
    adults = writer.audiences.create(
        key="adults", name="Adults", kind="dynamic", rule="age >= 30 AND plan = 'pro'"
    )
    writer.audiences.refresh(adults)
    expected = {
        p["id"]
        for p in profiles
        if p["attributes"]["age"] >= 30 and p["attributes"]["plan"] == "pro"
    }
    assert {member.id for member in reader.audiences.members(adults)} == expected

    # A worker killed in the middle of an import: the other finishes it, nothing lost.
    newsletter = writer.audiences.create(key="newsletter", name="Newsletter", kind="static")
    upload = tmp_path / "ids.txt"
    upload.write_text("".join(f"n{n}\n" for n in range(IMPORTED_IDS)))
    first_worker, _ = cluster.worker()
    job = writer.imports.create(newsletter, str(upload))
    _wait(
        lambda: reader.jobs.get(job.id).state == "running", "the import never started", first_worker
    )
    first_worker.send_signal(signal.SIGKILL)
    first_worker.wait(timeout=10)
    cluster.worker()
    done = reader.jobs.wait(job, timeout=WAIT_SECONDS)
    assert done.state == "succeeded", done.last_error
    assert done.attempts == 2  # the killed worker's attempt, then the other's
    members = [member.id for member in writer.audiences.members(newsletter)]
    assert len(members) == IMPORTED_IDS
    assert set(members) == {f"n{n}" for n in range(IMPORTED_IDS)}

    # A key revoked through one API is refused by the other within the cache bound.
    spare = writer.keys.create(role="read", name="spare")
    spare_reader = cluster.stack.enter_context(Client(second_api, key=spare.token))
    assert spare_reader.audiences.get(adults).key == "adults"
    writer.keys.revoke(spare.id)
    revoked_at = time.monotonic()
    while True:
        try:
            spare_reader.audiences.get(adults)
        except Unauthorized:
            break
        assert time.monotonic() - revoked_at < READ_CACHE_SECONDS + 10, (
            "the revoked key still works"
        )
        time.sleep(0.1)


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _wait(
    condition: Callable[[], bool], message: str, process: subprocess.Popen[str] | None = None
) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if condition():
            return
        if process is not None and process.poll() is not None:
            raise AssertionError(f"{message} (the process exited with {process.returncode})")
        time.sleep(0.1)
    raise AssertionError(message)
