"""Job handlers of events: ``events.import`` (a file of events) and ``events.expire`` (retention).

An import writes its rows in chunks, with a checkpoint after each (the rows done, the size of
its errors file) and resumes from the last one; rows without an ``event_id`` get one from the
upload and row, so a chunk written again by a retry stores nothing twice. Only a retry can
meet them stored: the first attempt (it leaves a marker in the upload's folder before writing)
has the write take them as new without looking them up (``event_imports.write_chunk``). Ids
are looked up among the events received since the dedupe window before the job was queued, so
a retry after the window still finds what an earlier attempt wrote.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from audiences.jobs.context import Cancelled, JobContext, JobFailed
from audiences.jobs.membership_jobs import resume_upload
from audiences.kit.clock import utcnow
from audiences.queue import ClaimedJob
from audiences.schemas.events import EventFileFormat
from audiences.services import event_imports, events, imports


def import_events(context: JobContext, job: ClaimedJob) -> dict[str, Any]:
    """Write an uploaded event file (payload ``upload``, ``format``), a chunk at a time."""
    payload = job.payload
    upload_id = str(payload["upload"])
    directory = imports.folder(context.settings.data_dir, job.workspace_id, upload_id)
    if not (directory / imports.UPLOAD).exists():
        raise JobFailed("the uploaded file is gone")
    fmt = EventFileFormat(payload["format"])
    first_run = _first_run(directory)
    state = resume_upload(context, directory, imports.PYTHON)
    done = state.position
    errors = directory / imports.ERRORS
    settings = context.settings
    try:
        context.progress(done)
        for chunk in event_imports.chunks(
            directory, fmt, size=settings.import_chunk_rows, skip=done
        ):
            with context.session() as session:
                outcome = event_imports.write_chunk(
                    session,
                    workspace_id=job.workspace_id,
                    runtime=context.runtime,
                    upload_id=upload_id,
                    fmt=fmt,
                    chunk=chunk,
                    max_future=timedelta(seconds=settings.max_event_future_seconds),
                    received_at=utcnow(),
                    first_run=first_run,
                    dedupe_window=timedelta(hours=settings.event_dedupe_window_hours),
                    accepted_at=job.created_at,
                )
            for row in outcome.refused:
                context.error(
                    row.message or "refused", code=row.code or "item_failed", row=row.number
                )
            for name, n in outcome.counts.items():
                context.count(name, n)
            with errors.open("a") as out:
                out.write(imports.error_lines(outcome.refused))
            done += len(chunk)
            checkpoint = imports.Checkpoint(state.pids, errors.stat().st_size, imports.PYTHON, done)
            imports.save_state(directory, done, checkpoint)
            context.progress(done)
            imports.drop_states(directory, done)
    except (Cancelled, JobFailed):
        imports.remove_upload(directory, keep_errors=True)
        raise
    except Exception:
        if job.attempt >= job.max_attempts:
            imports.remove_upload(directory, keep_errors=True)
        raise
    context.progress(done, done)
    imports.remove_upload(directory, keep_errors=context.counts.get("invalid", 0) > 0)
    return {key: context.counts.get(key, 0) for key in ("rows", "written", "duplicates", "invalid")}


STARTED = "started"
"""The marker the first attempt of an import leaves in the upload's folder."""


def _first_run(directory: Path) -> bool:
    """Whether no attempt of this import started before, so none wrote any of its events.

    The attempt number cannot say it: a worker shutting down gives its job back uncounted,
    after writing a chunk it had no time to checkpoint. The marker is made durable (its folder
    synced) before the first write; any later attempt, whatever it resumes from, finds it and
    has every id looked up."""
    marker = directory / STARTED
    if marker.exists():
        return False
    marker.touch()
    folder = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
    return True


def expire_events(context: JobContext, job: ClaimedJob) -> dict[str, Any]:
    """Drop the workspace's events older than its ``event_retention_days``; a rerun finds
    fewer (or none) to drop."""
    with context.session() as session:
        dropped = events.expire(session, workspace_id=job.workspace_id, runtime=context.runtime)
    context.count("dropped", dropped)
    return {"dropped": dropped}
