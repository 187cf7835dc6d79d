"""Job handlers of static audiences: ``membership.write``, ``import.rows``, ``membership.expire``.

Each is idempotent: the write a job carries is applied once, whatever the number of attempts
(see :mod:`audiences.services.static_members`), and an import resumes from its last
checkpoint, its counts and errors exact (see :mod:`audiences.services.imports`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from itertools import islice
from pathlib import Path
from typing import Any

from pyroaring import BitMap
from sqlalchemy import select

from audiences import queue
from audiences.engines.idfiles import StagedIds
from audiences.jobs.context import Cancelled, JobContext, JobFailed
from audiences.membership.bitmaps import from_numpy
from audiences.queue import ClaimedJob
from audiences.services import (
    import_staged,
    imports,
    lifecycle,
    member_days,
    member_writes,
    static_members,
)
from audiences.services.import_formats import (
    ImportFormat,
    Layout,
    Row,
    count_rows,
    layout,
    rows,
)
from audiences.services.import_staged import FileMap, RangeResult
from audiences.store.tables import AudienceRow


def write_members(context: JobContext, job: ClaimedJob) -> dict[str, Any]:
    """Apply a JSON membership write, with the writes of the same audience queued behind it
    (see :mod:`audiences.services.member_writes`): unknown profiles created, then one change.

    A retry after a crash finds its write applied already and returns the first result.
    """
    payload = job.payload
    audience_id, seq = str(payload["audience_id"]), int(payload["seq"])
    if _audience(context, job) is None:
        return {"indexing_state": "cancelled", "reason": "the audience no longer exists"}
    with context.session() as session:
        done = static_members.applied_result(
            session, audience_id=audience_id, seq=seq, job_id=job.id
        )
    if done is not None:  # applied by an attempt that died before it could finish the job
        return _counted(context, done)
    with context.session() as session:  # committed: the writes taken are leased to this worker
        pending = member_writes.take(
            session,
            audience_id=audience_id,
            seq=seq,
            job_id=job.id,
            owner=job.owner,
            lease_seconds=context.settings.job_lease_seconds,
        )
    taken = [write.job_id for write in pending if write.job_id != job.id]
    if not any(write.seq == seq for write in pending):  # applied by an attempt that lost its lease
        with context.session() as session:
            queue.release_taken(session, job_ids=taken, owner=job.owner)
            done = static_members.applied_result(
                session, audience_id=audience_id, seq=seq, job_id=job.id
            )
        if done is None:
            raise JobFailed("the write's ids are gone")
        return _counted(context, done)
    try:
        writes = _resolved(context, job.workspace_id, pending)
        with context.session() as session:
            audience = session.get_one(AudienceRow, audience_id)
            result = member_writes.apply(
                session,
                audience=audience,
                job_id=job.id,
                owner=job.owner,
                writes=writes,
                cache=context.runtime.bitmaps,
            )
    except BaseException:
        with context.session() as session:  # the writes taken go back to their own jobs
            queue.release_taken(session, job_ids=taken, owner=job.owner)
        raise
    if result is None:  # another worker applied it meanwhile
        with context.session() as session:
            result = static_members.applied_result(
                session, audience_id=audience_id, seq=seq, job_id=job.id
            )
        if result is None:
            raise JobFailed("the write was neither applied here nor elsewhere")
    own = next(write for write in pending if write.seq == seq)
    context.counts["ids"] = len(own.ids)
    context.progress(len(own.ids), len(own.ids))
    return _counted(context, dict(result))


def _resolved(
    context: JobContext, workspace_id: str, pending: list[member_writes.Pending]
) -> list[static_members.Write]:
    """The writes with their profiles' pids, unknown ids created, in one engine call."""
    ids = [identifier for write in pending for identifier in (*write.ids.adds, *write.ids.removes)]
    pids, _ = context.runtime.profiles.ensure_profiles(workspace_id, ids)
    writes, at = [], 0
    for write in pending:
        adds = from_numpy(pids[at : at + len(write.ids.adds)])
        at += len(write.ids.adds)
        removes = from_numpy(pids[at : at + len(write.ids.removes)])
        at += len(write.ids.removes)
        writes.append(
            static_members.Write(
                write.seq, write.job_id, write.action, adds, removes, ids=len(write.ids)
            )
        )
    return writes


def _counted(context: JobContext, result: dict[str, Any]) -> dict[str, Any]:
    """``result``, its counts of the change also in the job's counts: whichever attempt
    applied it (one that died before finishing the job saved the result, not the counts)."""
    context.counts.update({name: int(result.get(name, 0)) for name in static_members.RESULT_COUNTS})
    return result


def import_rows(context: JobContext, job: ClaimedJob) -> dict[str, Any]:
    """Import an uploaded file: rows resolved in chunks with checkpoints, then one change."""
    payload = job.payload
    directory = imports.folder(context.settings.data_dir, job.workspace_id, payload["upload"])
    if _audience(context, job) is None:
        imports.remove_upload(directory, keep_errors=False)
        return {"indexing_state": "cancelled", "reason": "the audience no longer exists"}
    with context.session() as session:
        done = static_members.applied_result(
            session, audience_id=payload["audience_id"], seq=int(payload["seq"]), job_id=job.id
        )
    if done is not None:  # applied by an attempt that died before it could finish the job
        imports.remove_upload(directory, keep_errors=True)
        return _counted(context, done)
    try:
        pids = _read(context, job, directory)
        with context.session() as session:
            audience = session.get_one(AudienceRow, payload["audience_id"])
            counts = {k: context.counts.get(k, 0) for k in ("rows", "duplicates", "invalid")}
            action = str(payload["action"])
            write = static_members.Write(
                int(payload["seq"]),
                job.id,
                action,
                adds=BitMap() if action == "remove" else pids,
                removes=pids if action == "remove" else BitMap(),
            )
            result = static_members.apply(
                session,
                audience=audience,
                write=write,
                trigger="import",
                extra=counts,
                cache=context.runtime.bitmaps,
            )
    except (Cancelled, JobFailed):
        imports.remove_upload(directory, keep_errors=True)
        raise
    except Exception:
        if job.attempt >= job.max_attempts:
            imports.remove_upload(directory, keep_errors=True)
        raise
    imports.remove_upload(directory, keep_errors=True)
    return _counted(context, result)


def expire_members(context: JobContext, job: ClaimedJob) -> dict[str, Any]:
    """Drop members past their audience's ``ttl_days``: one audience (payload ``audience_id``)
    or every static audience of the workspace that has a ttl."""
    wanted = job.payload.get("audience_id")
    with context.session() as session:
        stmt = select(AudienceRow.id).where(
            AudienceRow.workspace_id == job.workspace_id,
            AudienceRow.kind == "static",
            AudienceRow.ttl_days.is_not(None),
            lifecycle.live(),  # inactive and archived lists keep their members
        )
        if wanted is not None:
            stmt = stmt.where(AudienceRow.id == str(wanted))
        ids = list(session.scalars(stmt))
    runs = []
    for audience_id in ids:
        with context.session() as session:
            audience = session.get(AudienceRow, audience_id)
            if audience is None:
                continue
            run = member_days.expire(session, audience=audience, trigger="expiry")
            context.count("expired", run.exited or 0)
            runs.append({"audience_id": audience_id, "run_id": run.id, "exited": run.exited})
    return {"runs": runs}


def _read(context: JobContext, job: ClaimedJob, directory: Path) -> BitMap:
    """Resolve every row from the last checkpoint on; the pids of the valid rows.

    DuckDB reads the file itself when it can (see :mod:`audiences.services.import_staged`);
    otherwise the Python reader does, in chunks.
    """
    payload = job.payload
    upload = directory / imports.UPLOAD
    if not upload.exists():
        raise JobFailed("the uploaded file is gone; upload it again")
    fmt = ImportFormat(payload["format"])
    shape = imports.layout_of(payload)
    if fmt in (ImportFormat.CSV, ImportFormat.TSV):
        shape = layout(
            upload, fmt, id_column=payload["id_column"], attributes=",".join(shape.attributes)
        )
    total = count_rows(upload, fmt)
    staged = import_staged.stage(
        context.runtime.profiles, job.workspace_id, upload, fmt, shape, total
    )
    if staged is None:
        return _read_rows(context, job, directory, fmt, shape, total)
    with closing(staged[0]):
        return _read_staged(context, directory, *staged)


def resume_upload(context: JobContext, directory: Path, reader: int) -> imports.Checkpoint:
    """The last checkpoint this reader wrote, or a fresh start (counts and errors cleared)."""
    state = imports.load_state(directory, context.resume_from, reader)
    if state is None:
        context.counts = {"rows": 0, "duplicates": 0, "invalid": 0}
        state = imports.Checkpoint(BitMap(), 0, reader, 0)
    errors = directory / imports.ERRORS
    with errors.open("a+b") as out:
        out.truncate(state.errors_bytes)
    if state.errors_bytes == 0:
        errors.write_text(imports.ERROR_HEADER)
    return state


def _read_staged(
    context: JobContext, directory: Path, staged: StagedIds, mapped: FileMap
) -> BitMap:
    """Resolve the staged file a range of records at a time, a checkpoint after each."""
    state = resume_upload(context, directory, imports.ENGINE)
    pids, start = state.pids, state.position
    errors = directory / imports.ERRORS
    context.progress(context.resume_from if start else 0, mapped.rows)
    while start <= mapped.records:  # past the end once the last range is done
        stop = min(start + context.settings.import_range_rows, mapped.records)
        last = stop == mapped.records
        result = import_staged.resolve_range(staged, mapped, start, stop, last)
        _count_range(context, result, pids)
        with errors.open("a") as out:
            out.write(imports.error_lines(result.refused))
        done = mapped.processed(stop, last)
        start = mapped.records + 1 if last else stop
        checkpoint = imports.Checkpoint(pids, errors.stat().st_size, imports.ENGINE, start)
        imports.save_state(directory, done, checkpoint)
        context.progress(done, mapped.rows)
        imports.drop_states(directory, done)
    return pids


def _count_range(context: JobContext, result: RangeResult, pids: BitMap) -> None:
    for row in result.refused:
        context.error(row.message or "refused", code=row.code or "row_invalid", row=row.number)
    found = from_numpy(result.pids)
    valid = result.rows - len(result.refused)
    fresh = found.difference_cardinality(pids)
    pids |= found
    context.count("rows", result.rows)
    context.count("invalid", len(result.refused))
    context.count("duplicates", valid - fresh)


def _read_rows(
    context: JobContext,
    job: ClaimedJob,
    directory: Path,
    fmt: ImportFormat,
    shape: Layout,
    total: int,
) -> BitMap:
    """Read the file in Python, a chunk of rows at a time, a checkpoint after each."""
    upload = directory / imports.UPLOAD
    state = resume_upload(context, directory, imports.PYTHON)
    pids, start = state.pids, state.position
    errors = directory / imports.ERRORS
    context.progress(start, total)
    done = start
    with closing(rows(upload, fmt, shape)) as source:
        for _ in islice(source, start):
            pass
        for chunk in _chunks(source, context.settings.import_chunk_rows):
            _resolve_chunk(context, job, chunk, pids)
            done += len(chunk)
            with errors.open("a") as out:
                out.write(imports.error_lines([row for row in chunk if row.code is not None]))
            checkpoint = imports.Checkpoint(pids, errors.stat().st_size, imports.PYTHON, done)
            imports.save_state(directory, done, checkpoint)
            context.progress(done, max(total, done))
            imports.drop_states(directory, done)
    context.progress(done, done)
    return pids


def _resolve_chunk(context: JobContext, job: ClaimedJob, chunk: list[Row], pids: BitMap) -> None:
    payload = job.payload
    with context.session() as session:
        found = imports.resolve(
            session,
            runtime=context.runtime,
            workspace_id=job.workspace_id,
            rows=chunk,
            with_values=bool(payload["attributes"]) or bool(payload.get("all_attributes")),
            typed=payload["format"] == ImportFormat.NDJSON.value,
        )
    fresh = BitMap()
    duplicates = 0
    for row, pid in zip(chunk, found, strict=True):
        if pid is None:
            context.error(row.message or "refused", code=row.code or "row_invalid", row=row.number)
            continue
        if pid in pids or pid in fresh:
            duplicates += 1
        fresh.add(pid)
    pids |= fresh
    context.count("rows", len(chunk))
    context.count("invalid", sum(1 for pid in found if pid is None))
    context.count("duplicates", duplicates)


def _chunks(source: Iterator[Row], size: int) -> Iterator[list[Row]]:
    while chunk := list(islice(source, size)):
        yield chunk


def _audience(context: JobContext, job: ClaimedJob) -> AudienceRow | None:
    with context.session() as session:
        audience = session.get(AudienceRow, job.payload.get("audience_id"))
        if audience is None or audience.workspace_id != job.workspace_id:
            return None
        session.expunge(audience)
        return audience
