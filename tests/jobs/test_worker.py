"""The worker in process: outcomes of handlers, cancellation, shutdown, leases, the built-ins."""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from typing import Any, cast

import pytest
from sqlalchemy.orm import Session, sessionmaker

from audiences import queue
from audiences.config import Settings
from audiences.jobs.context import JobContext, JobFailed
from audiences.jobs.handlers import HANDLERS, HandlerRegistry, load_modules
from audiences.jobs.worker import Worker, WorkerPool, embedded
from audiences.kit.clock import utcnow
from audiences.queue import ClaimedJob
from audiences.services.runtime import Runtime
from audiences.store.tables import IdempotencyKeyRow, JobRow
from tests.jobs.conftest import enqueue, load

Handler = Any


@pytest.fixture
def registry() -> HandlerRegistry:
    """Only the handlers a test adds: claims are global, so a worker that knew the built-in
    handlers would take the jobs other tests (and the app's scheduler) queue."""
    return HandlerRegistry({})


def worker_for(
    factory: sessionmaker[Session], settings: Settings, registry: HandlerRegistry
) -> Worker:
    return Worker(session_factory=factory, settings=settings, registry=registry, name="test")


def test_a_handler_result_counts_and_errors_are_recorded(
    factory: sessionmaker[Session],
    job_settings: Settings,
    registry: HandlerRegistry,
    workspace_id: str,
    handler: str,
) -> None:
    @registry.register(handler)
    def rows(context: JobContext, job: ClaimedJob) -> dict[str, Any]:
        for batch in range(3):
            context.count("seen", 10)
            context.error("no email", code="row_invalid", row=batch)
            context.progress((batch + 1) * 10, 30)
        return {"echo": job.payload["x"]}

    job_id = enqueue(factory, workspace_id, handler, kind="import", payload={"x": 7})
    worker = worker_for(factory, job_settings, registry)
    assert worker.run_once() is True
    assert worker.run_once() is False
    row = load(factory, job_id)
    assert (row.state, row.result, row.counts) == ("succeeded", {"echo": 7}, {"seen": 30})
    assert (row.processed, row.total, row.error_count) == (30, 30, 3)
    assert row.errors[1] == {"code": "row_invalid", "message": "no email", "row": 1, "attempt": 1}


def test_an_error_is_retried_then_fails_and_stays_visible(
    factory: sessionmaker[Session],
    job_settings: Settings,
    registry: HandlerRegistry,
    workspace_id: str,
    handler: str,
) -> None:
    calls = []

    @registry.register(handler)
    def flaky(context: JobContext, job: ClaimedJob) -> None:
        calls.append(job.attempt)
        raise RuntimeError(f"boom {job.attempt}")

    job_id = enqueue(factory, workspace_id, handler, max_attempts=2)
    worker = worker_for(factory, job_settings, registry)
    while worker.run_once():
        pass
    row = load(factory, job_id)
    assert calls == [1, 2]
    assert (row.state, row.attempts, row.last_error) == ("failed", 2, "RuntimeError: boom 2")


def test_job_failed_is_not_retried(
    factory: sessionmaker[Session],
    job_settings: Settings,
    registry: HandlerRegistry,
    workspace_id: str,
    handler: str,
) -> None:
    def refuse(context: JobContext, job: ClaimedJob) -> None:
        raise JobFailed("the upload is gone")

    registry.add(handler, refuse)
    job_id = enqueue(factory, workspace_id, handler, max_attempts=3)
    worker_for(factory, job_settings, registry).run_once()
    row = load(factory, job_id)
    assert (row.state, row.attempts, row.last_error) == ("failed", 1, "the upload is gone")


def test_a_running_handler_sees_a_cancel_at_its_next_heartbeat(
    factory: sessionmaker[Session],
    job_settings: Settings,
    registry: HandlerRegistry,
    workspace_id: str,
    handler: str,
) -> None:
    reached = []

    @registry.register(handler)
    def long(context: JobContext, job: ClaimedJob) -> None:
        context.count("done")
        with context.session() as session:  # what POST /v1/jobs/{id}/cancel does
            queue.cancel(session, job=session.get_one(JobRow, job.id))
        reached.append("before")
        context.heartbeat()
        reached.append("after")

    job_id = enqueue(factory, workspace_id, handler)
    worker_for(factory, job_settings, registry).run_once()
    row = load(factory, job_id)
    assert reached == ["before"]
    assert (row.state, row.counts, row.cancel_requested) == ("cancelled", {"done": 1}, True)


def test_stopping_the_worker_releases_its_job_uncounted(
    factory: sessionmaker[Session],
    job_settings: Settings,
    registry: HandlerRegistry,
    workspace_id: str,
    handler: str,
) -> None:
    worker = worker_for(factory, job_settings, registry)

    @registry.register(handler)
    def interrupted(context: JobContext, job: ClaimedJob) -> None:
        worker.stopping.set()
        context.progress(1, 2)

    job_id = enqueue(factory, workspace_id, handler)
    worker.run_once()
    row = load(factory, job_id)
    assert (row.state, row.attempts, row.lease_owner) == ("queued", 0, None)


def test_a_worker_that_lost_its_lease_cannot_record_its_result(
    factory: sessionmaker[Session],
    job_settings: Settings,
    registry: HandlerRegistry,
    workspace_id: str,
    handler: str,
) -> None:
    @registry.register(handler)
    def slow(context: JobContext, job: ClaimedJob) -> str:
        with context.session() as session:  # another worker reaps it meanwhile
            queue.reap(session, now=utcnow() + timedelta(seconds=60))
        return "too late"

    job_id = enqueue(factory, workspace_id, handler)
    worker_for(factory, job_settings, registry).run_once()
    row = load(factory, job_id)
    assert (row.state, row.result, row.errors[0]["code"]) == ("queued", None, "lease_expired")


def test_the_heartbeat_thread_keeps_a_long_handler_leased(
    factory: sessionmaker[Session],
    job_settings: Settings,
    registry: HandlerRegistry,
    workspace_id: str,
    handler: str,
) -> None:
    reaped: list[list[str]] = []

    @registry.register(handler)
    def quiet(context: JobContext, job: ClaimedJob) -> None:
        time.sleep(job_settings.job_lease_seconds * 2)  # no checkpoint of its own
        with context.session() as session:
            reaped.append(queue.reap(session))

    job_id = enqueue(factory, workspace_id, handler)
    worker_for(factory, job_settings, registry).run_once()
    assert job_id not in reaped[0]
    row = load(factory, job_id)
    assert (row.state, row.attempts) == ("succeeded", 1)


def test_a_pool_drains_the_queue_and_stops(
    factory: sessionmaker[Session],
    job_settings: Settings,
    registry: HandlerRegistry,
    workspace_id: str,
    handler: str,
) -> None:
    seen: list[str] = []
    lock = threading.Lock()

    @registry.register(handler)
    def note(context: JobContext, job: ClaimedJob) -> None:
        with lock:
            seen.append(job.id)

    ids = [enqueue(factory, workspace_id, handler) for _ in range(20)]
    pool = WorkerPool(session_factory=factory, settings=job_settings, threads=3, registry=registry)
    pool.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(load(factory, i).state != "succeeded" for i in ids):
        time.sleep(0.05)
    pool.stop(timeout=10)
    assert sorted(seen) == sorted(ids)
    assert not any(thread.is_alive() for thread in pool._threads)


def test_purge_idempotency_keys_deletes_only_expired_keys_of_its_workspace(
    factory: sessionmaker[Session],
    job_settings: Settings,
    registry: HandlerRegistry,
    workspace_id: str,
) -> None:
    old = utcnow() - timedelta(hours=job_settings.idempotency_ttl_hours + 1)
    with factory.begin() as session:
        for key, created in (("old", old), ("new", utcnow())):
            session.add(
                IdempotencyKeyRow(
                    workspace_id=workspace_id, key=key, request_hash="h", created_at=created
                )
            )
    job_id = enqueue(
        factory, workspace_id, "maintenance.purge_idempotency_keys", dedupe_key="purge-1"
    )
    only_purge = HandlerRegistry(
        {"maintenance.purge_idempotency_keys": HANDLERS.get("maintenance.purge_idempotency_keys")}
    )
    worker_for(factory, job_settings, only_purge).run_once()
    row = load(factory, job_id)
    assert (row.state, row.result, row.counts) == ("succeeded", {"deleted": 1}, {"deleted": 1})
    with factory() as session:
        left = session.query(IdempotencyKeyRow.key).filter_by(workspace_id=workspace_id).all()
    assert [key for (key,) in left] == ["new"]


def test_the_registry_refuses_bad_and_duplicate_names() -> None:
    def noop(context: JobContext, job: ClaimedJob) -> None:
        return None

    registry = HANDLERS.copy()

    with pytest.raises(ValueError, match=r"domain\.verb"):
        registry.add("purge", noop)
    with pytest.raises(ValueError, match="already"):
        registry.add("maintenance.purge_idempotency_keys", noop)
    assert "maintenance.purge_idempotency_keys" in HANDLERS.names()
    assert load_modules(" tests.jobs.plugin , ") == ["tests.jobs.plugin"]
    assert {"tests.record", "tests.items"} <= HANDLERS.names()


def test_a_failed_job_is_logged_without_its_message(
    factory: sessionmaker[Session],
    job_settings: Settings,
    registry: HandlerRegistry,
    workspace_id: str,
    handler: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue #11: a handler's error may quote the upload's content; the job keeps it for its
    caller, the server's log does not."""

    content = "jane.doe@example.com"

    @registry.register(handler)
    def failing(context: JobContext, job: ClaimedJob) -> None:
        raise ValueError(f"row 2: {content} is not an integer")

    job_id = enqueue(factory, workspace_id, handler, max_attempts=1)
    with caplog.at_level(logging.ERROR, logger="audiences.jobs"):
        assert worker_for(factory, job_settings, registry).run_once() is True
    assert job_id in caplog.text and "ValueError" in caplog.text
    assert content not in caplog.text
    assert content in (load(factory, job_id).last_error or "")


def test_a_job_queued_in_this_process_wakes_the_idle_pool(
    factory: sessionmaker[Session],
    job_settings: Settings,
    registry: HandlerRegistry,
    workspace_id: str,
    handler: str,
) -> None:
    """Idle workers poll every AUDIENCES_JOB_POLL_SECONDS; a commit that queued a job wakes
    them at once (here the poll is a minute, so only the wake-up can run the job in time)."""
    done = threading.Event()

    @registry.register(handler)
    def note(context: JobContext, job: ClaimedJob) -> None:
        done.set()

    slow_poll = job_settings.model_copy(update={"job_poll_seconds": 60.0, "scheduler_seconds": 0})
    pool = WorkerPool(session_factory=factory, settings=slow_poll, threads=2, registry=registry)
    pool.start()
    try:
        time.sleep(0.2)  # both workers have found nothing and are waiting
        job_id = enqueue(factory, workspace_id, handler)
        assert done.wait(20)
    finally:
        pool.stop(timeout=10)
    assert load(factory, job_id).state == "succeeded"


@pytest.mark.parametrize(("engine", "warned"), [("duckdb", True), ("postgres", False)])
def test_a_server_without_job_threads_says_when_profile_jobs_would_wait(
    factory: sessionmaker[Session],
    tmp_path: Any,
    caplog: pytest.LogCaptureFixture,
    engine: str,
    warned: bool,
) -> None:
    """With an engine only the server opens, its job threads are the only ones that can run
    evaluations, imports, syncs and deliveries: turned off, the server says so at start."""
    settings = Settings(
        data_dir=tmp_path,
        worker_threads=0,
        profile_engine=engine,
        profile_engine_url="postgresql://postgres@127.0.0.1:5432/test",
    )
    with caplog.at_level(logging.WARNING, logger="audiences.jobs"):
        assert embedded(settings, factory, runtime=cast(Runtime, object())) is None
    assert ("AUDIENCES_WORKER_THREADS=0" in caplog.text) is warned
