"""What a running handler gets: sessions, settings, progress, counts, errors and cancellation."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from audiences import queue
from audiences.config import Settings
from audiences.queue import ClaimedJob, LeaseLost
from audiences.services.runtime import Runtime


class Cancelled(Exception):
    """Cancel was requested; raised from :meth:`JobContext.progress` and ``heartbeat``.

    A handler lets it propagate (after cleaning up, if it must); the worker marks the job
    cancelled, keeping the counts and errors of the last checkpoint.
    """


class Interrupted(Exception):
    """The worker is shutting down; the job goes back to the queue without counting an attempt."""


class JobFailed(Exception):
    """Raise from a handler to fail the job at once, without retrying (bad payload, gone data)."""


class JobContext:
    """A handler's window on its job: one per attempt, used from the handler's thread.

    Counts and errors are kept in memory and saved with the next :meth:`progress`,
    :meth:`heartbeat` or the job's completion, together with ``processed``: a checkpoint is
    atomic. A retried attempt starts from the last checkpoint (``resume_from`` and ``counts``),
    so a handler that resumes from there reports exact counts; one that starts over should
    clear ``counts`` first.
    """

    def __init__(
        self,
        *,
        job: ClaimedJob,
        session_factory: sessionmaker[Session],
        settings: Settings,
        stopping: threading.Event | None = None,
        runtime: Runtime | None = None,
    ) -> None:
        self.job = job
        self._runtime = runtime
        self.session_factory = session_factory
        self.settings = settings
        self.counts: dict[str, int] = dict(job.counts)
        self.resume_from = job.processed
        self._processed = job.processed
        self._total = job.total
        self._errors: list[dict[str, Any]] = []
        self._cancel = threading.Event()
        self._lost = threading.Event()
        self._stopping = stopping or threading.Event()
        self._lock = threading.Lock()

    @property
    def runtime(self) -> Runtime:
        """The profile engine and bitmap cache of this process (handlers registered with
        ``needs_profiles=True`` only run where there is one)."""
        if self._runtime is None:
            raise JobFailed("this worker has no profile engine")
        return self._runtime

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in a transaction of its own: committed when the block ends without error."""
        with self.session_factory.begin() as session:
            yield session

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``name`` (saved at the next checkpoint)."""
        self.counts[name] = self.counts.get(name, 0) + n

    def error(self, message: str, *, code: str = "item_failed", **details: Any) -> None:
        """Report a problem with one item (a row, a record); the job goes on.

        ``details`` must be JSON values (``row=12``, ``field="email"``). Only the first 1,000
        errors of a job are kept; ``error_count`` counts them all.
        """
        entry = {**details, "code": code, "message": message, "attempt": self.job.attempt}
        self._errors.append(entry)

    def progress(self, processed: int, total: int | None = None) -> None:
        """Checkpoint: ``processed`` items of ``total`` done, with the counts and errors so far.

        Raises :class:`Cancelled` if cancel was requested, :class:`Interrupted` if the worker is
        stopping, :class:`~audiences.queue.LeaseLost` if the job was taken away. Call it
        once per batch, not per item: each call is a write.
        """
        self._processed = max(self._processed, processed)
        if total is not None:
            self._total = total
        self._save()

    def heartbeat(self) -> None:
        """A checkpoint without progress: saves counts and errors, sees a cancel request."""
        self._save()

    @property
    def cancel_requested(self) -> bool:
        """Whether cancel was seen by a checkpoint or the background heartbeat."""
        return self._cancel.is_set()

    def beat(self) -> None:
        """Extend the lease from the worker's heartbeat thread; note a cancel or a lost lease."""
        try:
            with self.session() as session, self._lock:
                cancel = queue.heartbeat(
                    session, job=self.job, lease_seconds=self.settings.job_lease_seconds
                )
        except LeaseLost:
            self._lost.set()
            return
        if cancel:
            self._cancel.set()

    def finish(self, action: Callable[..., Any], **kwargs: Any) -> Any:
        """Run a final queue call (``complete``, ``fail``, ``cancelled``) with what is unsaved."""
        with self.session() as session, self._lock:
            errors, self._errors = self._errors, []
            return action(session, job=self.job, counts=self.counts, errors=errors, **kwargs)

    def _save(self) -> None:
        self._raise_if_stopped()
        with self.session() as session, self._lock:
            cancel = queue.checkpoint(
                session,
                job=self.job,
                lease_seconds=self.settings.job_lease_seconds,
                processed=self._processed,
                total=self._total,
                counts=self.counts,
                errors=self._errors,
            )
            self._errors = []
        if cancel:
            self._cancel.set()
        self._raise_if_stopped()

    def _raise_if_stopped(self) -> None:
        if self._lost.is_set():
            raise LeaseLost(self.job.id)
        if self._cancel.is_set():
            raise Cancelled(self.job.id)
        if self._stopping.is_set():
            raise Interrupted(self.job.id)
