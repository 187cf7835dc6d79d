"""Workers: claim a job, run its handler with a heartbeat beside it, record what happened.

``audiences serve`` runs ``AUDIENCES_WORKER_THREADS`` of them inside the server process;
``audiences worker`` runs them in a process of their own, any number of them against the same
database. Each worker also reaps expired leases now and then, so a job whose worker died is
retried as long as any worker lives.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from types import FrameType

from sqlalchemy import Engine, event
from sqlalchemy.orm import Session, sessionmaker

from audiences import queue
from audiences.config import Settings
from audiences.engines import factory
from audiences.jobs.context import Cancelled, Interrupted, JobContext, JobFailed
from audiences.jobs.handlers import HANDLERS, HandlerRegistry, load_modules
from audiences.jobs.schedule import Scheduler
from audiences.kit.ids import new_id
from audiences.kit.logs import get_logger
from audiences.queue import ClaimedJob, LeaseLost
from audiences.services.runtime import Runtime, open_runtime
from audiences.store.db import make_engine, make_session_factory
from audiences.store.migrate import migrate

log = get_logger("audiences.jobs")


class Worker:
    """One worker: a loop of claim, run, record, on the calling thread."""

    def __init__(
        self,
        *,
        session_factory: sessionmaker[Session],
        settings: Settings,
        registry: HandlerRegistry | None = None,
        name: str | None = None,
        stopping: threading.Event | None = None,
        runtime: Runtime | None = None,
        wake: threading.Event | None = None,
    ) -> None:
        self.session_factory = session_factory
        self.settings = settings
        self.runtime = runtime
        self.registry = registry or HANDLERS
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{new_id()[-8:]}"
        self.stopping = stopping or threading.Event()
        self.wake = wake or self.stopping
        """Set when this process queues a job (and when it stops): an idle worker looks at
        once instead of after ``AUDIENCES_JOB_POLL_SECONDS``."""
        self._next_reap = 0.0

    def run(self) -> None:
        """Work until :attr:`stopping` is set; database errors are logged and waited out."""
        while not self.stopping.is_set():
            try:
                self.reap_if_due()
                ran = self.run_once()
            except Exception:
                log.exception("worker %s: queue call failed; retrying", self.name)
                ran = False
            if not ran:
                self.wake.wait(self.settings.job_poll_seconds)
                if self.wake is not self.stopping:
                    self.wake.clear()

    def run_once(self) -> bool:
        """Claim one due job and run it to an outcome; False if none was due."""
        with self.session_factory.begin() as session:
            job = queue.claim(
                session,
                owner=self.name,
                lease_seconds=self.settings.job_lease_seconds,
                handlers=self.registry.runnable(with_profiles=self.runtime is not None),
            )
        if job is None:
            return False
        self._execute(job)
        return True

    def reap_if_due(self) -> list[str]:
        """Reap expired leases, at most once per half lease; the ids of the jobs reaped."""
        if time.monotonic() < self._next_reap:
            return []
        self._next_reap = time.monotonic() + self.settings.job_lease_seconds / 2
        with self.session_factory.begin() as session:
            reaped = queue.reap(session, backoff_seconds=self.settings.job_backoff_seconds)
        if reaped:
            log.warning(
                "worker %s: re-queued %d job(s) with expired leases", self.name, len(reaped)
            )
        return reaped

    def _execute(self, job: ClaimedJob) -> None:
        context = JobContext(
            job=job,
            session_factory=self.session_factory,
            settings=self.settings,
            stopping=self.stopping,
            runtime=self.runtime,
        )
        done = threading.Event()
        beat = threading.Thread(
            target=_beat, args=(context, done), name=f"heartbeat-{job.id}", daemon=True
        )
        beat.start()
        try:
            self._outcome(context, job)
        except LeaseLost:
            log.warning(
                "worker %s: lost the lease of job %s; its result is dropped", self.name, job.id
            )
        finally:
            done.set()
            beat.join()

    def _outcome(self, context: JobContext, job: ClaimedJob) -> None:
        backoff = self.settings.job_backoff_seconds
        try:
            result = self.registry.get(job.handler)(context, job)
        except Cancelled:
            context.finish(queue.cancelled)
        except Interrupted:
            with self.session_factory.begin() as session:
                queue.release(session, job=job)
        except LeaseLost:
            raise
        except JobFailed as exc:
            context.finish(queue.fail, error=str(exc), retry=False, backoff_seconds=backoff)
        except Exception as exc:
            log.exception("worker %s: job %s (%s) failed", self.name, job.id, job.handler)
            error = f"{type(exc).__name__}: {exc}"
            context.finish(queue.fail, error=error, backoff_seconds=backoff)
        else:
            context.finish(queue.complete, result=result)


def _beat(context: JobContext, done: threading.Event) -> None:
    interval = context.settings.job_lease_seconds / 3
    while not done.wait(interval):
        try:
            context.beat()
        except Exception:
            log.exception("heartbeat of job %s failed; retrying", context.job.id)


class WorkerPool:
    """``threads`` workers on daemon threads, started and stopped together."""

    def __init__(
        self,
        *,
        session_factory: sessionmaker[Session],
        settings: Settings,
        threads: int,
        registry: HandlerRegistry | None = None,
        runtime: Runtime | None = None,
    ) -> None:
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.workers = [
            Worker(
                session_factory=session_factory,
                settings=settings,
                registry=registry,
                stopping=self.stopping,
                runtime=runtime,
                wake=self.wake,
            )
            for _ in range(threads)
        ]
        # Jobs queued by this process's sessions wake the idle workers when they commit; jobs
        # of other processes are found by polling.
        event.listen(session_factory, "after_commit", self._woken_by)
        self._threads: list[threading.Thread] = []
        self._timeout = settings.job_lease_seconds
        self._session_factory = session_factory
        self.scheduler = (
            Scheduler(session_factory=session_factory, settings=settings, stopping=self.stopping)
            if settings.scheduler_seconds > 0
            else None
        )

    def _woken_by(self, session: Session) -> None:
        if session.info.pop(queue.ENQUEUED, False):
            self.wake.set()

    def start(self) -> None:
        """Start every worker on a thread of its own, and the scheduler beside them."""
        for index, worker in enumerate(self.workers):
            thread = threading.Thread(target=worker.run, name=f"worker-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        if self.scheduler is not None:
            self.scheduler.start()

    def stop(self, timeout: float | None = None) -> None:
        """Ask the workers to stop and wait for them (a running handler is interrupted at its
        next checkpoint and its job re-queued; past ``timeout`` its lease will expire instead)."""
        self.stopping.set()
        self.wake.set()
        event.remove(self._session_factory, "after_commit", self._woken_by)
        deadline = time.monotonic() + (self._timeout if timeout is None else timeout)
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0))
        if self.scheduler is not None:
            self.scheduler.join(max(deadline - time.monotonic(), 0))


def embedded(
    settings: Settings, session_factory: sessionmaker[Session], runtime: Runtime | None = None
) -> WorkerPool | None:
    """The server's own workers (``AUDIENCES_WORKER_THREADS``), started; None if set to 0.

    They share the server's profile engine, so they also run the jobs that need profile data.
    """
    if settings.worker_threads == 0:
        if runtime is not None and not factory.shared(settings):
            log.warning(
                "AUDIENCES_WORKER_THREADS=0 with the %s profile engine, which only this process "
                "opens: jobs that touch profiles (evaluations, imports, syncs, deliveries) will "
                "wait until a server with worker threads runs them",
                settings.profile_engine,
            )
        return None
    load_modules(settings.job_handler_modules)
    pool = WorkerPool(
        session_factory=session_factory,
        settings=settings,
        threads=settings.worker_threads,
        runtime=runtime,
    )
    pool.start()
    return pool


def run_workers(settings: Settings, *, threads: int) -> None:
    """``audiences worker``: run ``threads`` workers until SIGINT or SIGTERM, then stop cleanly."""
    engine = make_engine(settings.metadata_url)
    migrate(engine)
    load_modules(settings.job_handler_modules)
    sessions = make_session_factory(engine)
    runtime = shared_runtime(settings, engine, sessions)
    pool = WorkerPool(
        session_factory=sessions,
        settings=settings,
        threads=threads,
        runtime=runtime,
    )

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping workers", signum)
        pool.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    pool.start()
    log.info("%d worker(s) running handlers: %s", threads, ", ".join(HANDLERS))
    try:
        while not pool.stopping.wait(1.0):
            pass
        pool.stop()
    finally:
        engine.dispose()
        if runtime is not None:
            runtime.profiles.close()


def shared_runtime(
    settings: Settings, metadata: Engine, sessions: sessionmaker[Session]
) -> Runtime | None:
    """A worker process's own profile engine when every process can open it (PostgreSQL, a
    ClickHouse server beside PostgreSQL metadata): its workers then claim the jobs that need
    profile data too. None for the embedded DuckDB file and chdb's folder, which the server
    process owns (its own workers run those jobs)."""
    if not factory.shared(settings):
        return None
    return open_runtime(settings, metadata, sessions)
