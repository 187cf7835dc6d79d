"""With a profile engine every process can reach (PostgreSQL), a separate ``audiences worker``
process runs the jobs that need profile data: it opens the engine itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from audiences import queue
from audiences.api.app import create_app
from audiences.config import Settings
from audiences.jobs.worker import shared_runtime
from audiences.queue import JobKind
from audiences.store.db import make_engine
from audiences.store.tables import JobRow
from tests.engines.kinds import Store, opened
from tests.factories import make_tenant

ROOT = Path(__file__).resolve().parents[2]
WAIT_SECONDS = 40


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with opened("postgres", tmp_path) as made:
        yield made


@pytest.fixture
def app(store: Store, isolated_database_url: str, tmp_path: Path) -> Iterator[FastAPI]:
    """The API on the isolated metadata database and the PostgreSQL engine, no workers."""
    settings = Settings(
        **{**store.settings, "data_dir": tmp_path / "api"},
        database_url=isolated_database_url,
        worker_threads=0,
        rate_limit="100000/minute",
    )
    application = create_app(settings)
    yield application
    application.state.runtime.profiles.close()
    application.state.engine.dispose()


def test_a_worker_process_runs_an_evaluation_on_the_shared_engine(
    app: FastAPI,
    store: Store,
    isolated_database_url: str,
    isolated_factory: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    with make_tenant(app) as tenant:
        batch = [{"id": f"p{n}", "attributes": {"age": n}} for n in range(50)]
        assert tenant.write.post("/v1/profiles/batch", json={"profiles": batch}).status_code == 200
        body = {"key": f"a-{uuid.uuid4().hex[:6]}", "name": "old", "kind": "dynamic"}
        created = tenant.write.post("/v1/audiences", json={**body, "rule": "age >= 40"})
        assert created.status_code == 201, created.text
        audience_id = created.json()["id"]
        with isolated_factory.begin() as session:
            job_id = queue.enqueue(
                session,
                workspace_id=tenant.workspace_id,
                kind=JobKind.EVALUATION,
                handler="evaluation.run",
                payload={"audience_id": audience_id, "trigger": "job"},
            ).id
        log = tmp_path / "worker.log"
        env = {
            **os.environ,
            "AUDIENCES_DATABASE_URL": isolated_database_url,
            "AUDIENCES_PROFILE_ENGINE": "postgres",
            "AUDIENCES_PROFILE_ENGINE_URL": store.settings["profile_engine_url"],
            "AUDIENCES_PROFILE_ENGINE_SCHEMA": store.settings["profile_engine_schema"],
            "AUDIENCES_JOB_POLL_SECONDS": "0.05",
            "AUDIENCES_SCHEDULER_SECONDS": "0",
        }
        command = [sys.executable, "-m", "audiences", "worker", "--threads", "1"]
        with log.open("w") as errors:
            worker = subprocess.Popen(
                [*command, "--data-dir", str(tmp_path / "worker")],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=errors,
            )
            try:
                deadline = time.monotonic() + WAIT_SECONDS
                while _state(isolated_factory, job_id) != "succeeded":
                    assert worker.poll() is None, log.read_text()
                    assert time.monotonic() < deadline, log.read_text()
                    time.sleep(0.05)
            finally:
                worker.send_signal(signal.SIGTERM)
                assert worker.wait(timeout=WAIT_SECONDS) == 0, log.read_text()
        page = tenant.read.get(f"/v1/audiences/{audience_id}/members", params={"limit": 100})
        assert {m["id"] for m in page.json()["data"]} == {f"p{n}" for n in range(40, 50)}


def _state(factory: sessionmaker[Session], job_id: str) -> str:
    with factory() as session:
        job = session.get(JobRow, job_id)
        return job.state if job is not None else "missing"


def test_only_a_shared_engine_gives_worker_processes_a_runtime(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    metadata = make_engine(settings.metadata_url)
    try:
        # DuckDB: the server's own (neither the metadata nor its sessions are used).
        assert shared_runtime(settings, metadata, sessionmaker()) is None
    finally:
        metadata.dispose()


def test_a_worker_without_a_postgresql_server_says_so_and_exits(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "AUDIENCES_DATABASE_URL": f"sqlite:///{tmp_path / 'audiences.db'}",
        "AUDIENCES_PROFILE_ENGINE": "postgres",
    }
    env.pop("AUDIENCES_PROFILE_ENGINE_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "audiences", "worker", "--data-dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT_SECONDS,
    )
    assert done.returncode == 1
    assert "AUDIENCES_PROFILE_ENGINE_URL" in done.stderr.splitlines()[-1]
    assert "Traceback" not in done.stderr
