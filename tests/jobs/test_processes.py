"""Real ``audiences worker`` processes: two drain one queue; a killed one loses nothing.

Each test gets a database of its own (a worker process claims every due job it can run), and
handlers from :mod:`tests.jobs.plugin`, which count their side effects in files.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from audiences import queue
from audiences.services import workspaces
from audiences.store.tables import JobRow
from tests.jobs import plugin

ROOT = Path(__file__).resolve().parents[2]
WAIT_SECONDS = 40
Start = Callable[..., subprocess.Popen[str]]


@pytest.fixture
def start_worker(isolated_database_url: str, tmp_path: Path) -> Iterator[Start]:
    """Start ``audiences worker`` processes on the isolated database; all stopped at the end."""
    started: list[subprocess.Popen[str]] = []
    logs = ExitStack()

    def start(threads: int = 2) -> subprocess.Popen[str]:
        log = tmp_path / f"worker-{len(started)}.log"
        env = {
            **os.environ,
            "AUDIENCES_DATABASE_URL": isolated_database_url,
            "AUDIENCES_JOB_HANDLER_MODULES": "tests.jobs.plugin",
            "AUDIENCES_JOB_LEASE_SECONDS": "1.5",
            "AUDIENCES_JOB_POLL_SECONDS": "0.05",
            "AUDIENCES_JOB_BACKOFF_SECONDS": "0",
        }
        command = [sys.executable, "-m", "audiences", "worker", "--threads", str(threads)]
        process = subprocess.Popen(
            [*command, "--data-dir", str(tmp_path / "data")],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=logs.enter_context(log.open("w")),
            text=True,
        )
        started.append(process)
        _wait_for(lambda: "worker(s) running" in log.read_text(), f"{log} never started")
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()
    logs.close()


def _wait_for(condition: Callable[[], bool], message: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


def _states(factory: sessionmaker[Session]) -> Counter[str]:
    with factory() as session:
        rows = session.execute(select(JobRow.state, func.count()).group_by(JobRow.state))
        return Counter({state: count for state, count in rows})


def _workspace(factory: sessionmaker[Session]) -> str:
    with factory.begin() as session:
        return workspaces.ensure(session, slug="procs").id


def _stop(process: subprocess.Popen[str]) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=WAIT_SECONDS)


def test_two_worker_processes_run_each_of_200_jobs_exactly_once(
    isolated_factory: sessionmaker[Session], start_worker: Start, tmp_path: Path
) -> None:
    workers = [start_worker(), start_worker()]
    log = tmp_path / "executions.log"
    workspace_id = _workspace(isolated_factory)
    with isolated_factory.begin() as session:
        ids = {
            queue.enqueue(
                session,
                workspace_id=workspace_id,
                kind="export",
                handler="tests.record",
                payload={"log": str(log)},
            ).id
            for _ in range(200)
        }
    _wait_for(lambda: _states(isolated_factory) == {"succeeded": 200}, "jobs not drained")
    runs = Counter(line.split()[0] for line in log.read_text().splitlines())
    assert set(runs) == ids
    assert set(runs.values()) == {1}
    pids = {line.split()[1] for line in log.read_text().splitlines()}
    assert pids == {str(process.pid) for process in workers}
    assert [_stop(process) for process in workers] == [0, 0]


def test_a_worker_killed_mid_handler_loses_nothing_and_repeats_nothing(
    isolated_factory: sessionmaker[Session], start_worker: Start, tmp_path: Path
) -> None:
    doomed = start_worker(threads=1)
    workspace_id = _workspace(isolated_factory)
    with isolated_factory.begin() as session:
        job_id = queue.enqueue(
            session,
            workspace_id=workspace_id,
            kind="import",
            handler="tests.items",
            payload={"dir": str(tmp_path)},
        ).id
    _wait_for((tmp_path / "halfway").exists, "the handler never reached halfway")
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    assert _states(isolated_factory) == {"running": 1}

    survivor = start_worker(threads=1)
    _wait_for(lambda: _states(isolated_factory) == {"succeeded": 1}, "the job never finished")
    with isolated_factory() as session:
        job = session.get_one(JobRow, job_id)
    assert (job.attempts, job.processed, job.total) == (2, plugin.ITEMS, plugin.ITEMS)
    assert job.counts == {"items": plugin.ITEMS}
    assert [error["code"] for error in job.errors] == ["lease_expired"]
    executions = (tmp_path / "executions.log").read_text().splitlines()
    assert sorted(int(line.split()[0]) for line in executions) == list(range(plugin.ITEMS))
    assert {line.split()[1] for line in executions} == {"1", "2"}
    assert len(list(tmp_path.glob("item-*"))) == plugin.ITEMS
    assert _stop(survivor) == 0
