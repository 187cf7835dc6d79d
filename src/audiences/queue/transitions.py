"""How a job row changes when an attempt reports, fails or ends: the queue's shared steps.

Pure functions of a loaded :class:`~audiences.store.tables.JobRow`; :mod:`audiences.queue`
loads the row (under its lease) and flushes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from audiences.schemas.jobs import FINISHED_STATES, JobState
from audiences.store.tables import JobRow

MAX_ERRORS = 1000
"""Errors kept per job; ``error_count`` goes on counting beyond it."""
MAX_BACKOFF = timedelta(hours=1)


def backoff_delay(attempt: int, base_seconds: float) -> timedelta:
    """How long a job waits before attempt ``attempt + 1``: doubling, capped at an hour.

    >>> [backoff_delay(n, 10).total_seconds() for n in (1, 2, 3)]
    [10.0, 20.0, 40.0]
    """
    seconds = base_seconds * 2 ** max(attempt - 1, 0)
    return min(timedelta(seconds=seconds), MAX_BACKOFF)


def record(
    row: JobRow,
    *,
    processed: int | None = None,
    total: int | None = None,
    counts: Mapping[str, int] | None = None,
    errors: Iterable[Mapping[str, Any]] = (),
) -> None:
    """Apply a checkpoint: ``processed`` only forwards, counts replaced, errors appended
    (the first :data:`MAX_ERRORS` kept, all counted)."""
    if processed is not None and processed > row.processed:
        row.processed = processed
    if total is not None:
        row.total = total
    if counts is not None:
        row.counts = dict(counts)
    new = [dict(error) for error in errors]
    if new:
        kept = list(row.errors or [])
        row.errors = kept + new[: max(MAX_ERRORS - len(kept), 0)]
        row.error_count += len(new)


def after_failure(row: JobRow, *, retry: bool, backoff_seconds: float, now: datetime) -> JobState:
    """After a lost or failed attempt: cancelled if asked, queued after a backoff while
    attempts are left (and ``retry``), failed otherwise. Returns the new state."""
    if row.cancel_requested:
        state = JobState.CANCELLED
    elif retry and row.attempts < row.max_attempts:
        state = JobState.QUEUED
    else:
        state = JobState.FAILED
    if state is JobState.QUEUED:
        row.state = JobState.QUEUED.value
        row.run_after = now + backoff_delay(row.attempts, backoff_seconds)
        row.updated_at = now
        clear_lease(row)
    else:
        finish(row, state, now)
    return state


def finish(row: JobRow, state: JobState, now: datetime) -> None:
    """End the job in ``state`` (one of the finished states) and drop its lease."""
    assert state in FINISHED_STATES
    row.state = state.value
    row.finished_at = now
    row.updated_at = now
    clear_lease(row)


def clear_lease(row: JobRow) -> None:
    """No worker holds the job any more."""
    row.lease_owner = None
    row.lease_expires_at = None
