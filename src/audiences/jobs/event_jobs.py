"""Job handlers of events: ``events.import`` (a file of events) and ``events.expire`` (retention).

An import writes its rows in chunks, with a checkpoint after each (the rows done, the size of
its errors file) and resumes from the last one; rows without an ``event_id`` get one from the
upload and row, so a chunk written again by a retry stores nothing twice.
"""

from __future__ import annotations

from datetime import timedelta
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


def expire_events(context: JobContext, job: ClaimedJob) -> dict[str, Any]:
    """Drop the workspace's events older than its ``event_retention_days``; a rerun finds
    fewer (or none) to drop."""
    with context.session() as session:
        dropped = events.expire(session, workspace_id=job.workspace_id, runtime=context.runtime)
    context.count("dropped", dropped)
    return {"dropped": dropped}
