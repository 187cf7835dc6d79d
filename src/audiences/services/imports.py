"""File imports into static audiences: accept an upload, resolve its rows to profiles in chunks,
keep resumable checkpoints and every row error beside the upload.

An upload lives in ``<data_dir>/imports/<workspace id>/<upload id>/``: ``upload`` (the file as
received), ``state-<rows>`` (the pids found in the first ``rows`` rows, the size of
``errors.csv`` then, and where the reader that wrote it stopped; written before the job's
checkpoint of the same ``rows``) and ``errors.csv`` (every refused row). The job resumes from
its last checkpoint with exact counts.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from pyroaring import BitMap
from sqlalchemy import select
from sqlalchemy.orm import Session

from audiences.errors import Unprocessable, ValidationFailed
from audiences.kit.spreadsheets import defused
from audiences.schemas.attributes import AttributeType
from audiences.services import attributes, audiences, evaluation, static_members
from audiences.services.callers import Caller
from audiences.services.import_formats import (
    FileRefused,
    ImportFormat,
    Layout,
    Row,
    layout,
)
from audiences.services.runtime import Runtime
from audiences.store.tables import JobRow

UPLOAD = "upload"
ERRORS = "errors.csv"
ERROR_HEADER = "row,line,code,message\n"
JSON_TYPES = (AttributeType.STRING_LIST, AttributeType.NUMBER_LIST, AttributeType.JSON)
EVENT_IMPORT_HANDLER = "events.import"
"""The job of an event file (``services.event_imports``), whose upload lives here too."""
UPLOAD_HANDLERS = (static_members.IMPORT_HANDLER, EVENT_IMPORT_HANDLER)
"""The jobs that read an upload of this folder: its errors file is theirs, and a live one's
upload is never swept."""


@dataclass(frozen=True)
class ImportOptions:
    """What the client said about the file."""

    mode: str
    format: ImportFormat
    id_column: str | None
    attributes: str | None


def folder(data_dir: Path, workspace_id: str, upload_id: str) -> Path:
    """Where one upload and its checkpoints live."""
    return Path(data_dir) / "imports" / workspace_id / upload_id


def accept(
    session: Session,
    *,
    caller: Caller,
    audience_id: str,
    upload: Path,
    options: ImportOptions,
    digest: str,
    max_attempts: int,
    idempotency_key: str | None = None,
) -> JobRow:
    """Check the uploaded file's header against the options and queue its import.

    422 when the file cannot be imported at all (empty, no such id or attribute column); then,
    and when an ``Idempotency-Key`` names an earlier import, the upload is deleted.
    """
    audience = audiences.get(session, caller=caller, audience_id=audience_id)
    static_members.require_pushed(audience)
    try:
        shape = layout(
            upload, options.format, id_column=options.id_column, attributes=options.attributes
        )
    except FileRefused as exc:
        raise Unprocessable(str(exc), code="import_file_invalid") from None
    payload = {
        "upload": upload.parent.name,
        "format": options.format.value,
        "id_column": shape.id_column,
        "attributes": list(shape.attributes),
        "all_attributes": shape.positions.get("*") == 0,
        "bytes": upload.stat().st_size,
        "sha256": digest,
    }
    dedupe = None if idempotency_key is None else f"import:{audience.id}:{idempotency_key}"
    job = static_members.accept(
        session,
        caller=caller,
        audience=audience,
        action=options.mode,
        handler=static_members.IMPORT_HANDLER,
        payload=payload,
        max_attempts=max_attempts,
        dedupe_key=dedupe,
    )
    replayed = job.payload.get("upload") != payload["upload"]
    if replayed and (job.payload.get("sha256"), job.payload.get("action")) != (
        digest,
        options.mode,
    ):
        raise ValidationFailed(
            "this Idempotency-Key was used for another import",
            code="idempotency_key_reused",
        )
    return job


def layout_of(payload: dict[str, Any]) -> Layout:
    """The file's layout as the accepted job recorded it (the header is read again)."""
    return Layout(
        payload["id_column"],
        tuple(payload["attributes"]),
        {"*": 0} if payload.get("all_attributes") else {},
    )


def resolve(
    session: Session,
    *,
    runtime: Runtime,
    workspace_id: str,
    rows: Sequence[Row],
    with_values: bool,
    typed: bool,
) -> list[int | None]:
    """The pid of each valid row (its profile created when new, its values upserted); None for
    a row refused, whose ``code`` and ``message`` then say why. ``typed``: values are JSON
    values (NDJSON); else text (CSV cells). Undeclared attributes are inferred from either
    (:func:`attributes.admit`), or refused in a strict workspace."""
    valid = [row for row in rows if row.code is None and row.external_id is not None]
    found: dict[int, int] = {}
    if not with_values or not any(row.values for row in valid):
        pids, _ = runtime.profiles.ensure_profiles(
            workspace_id, [row.external_id or "" for row in valid]
        )
        found = {id(row): pid for row, pid in zip(valid, pids, strict=True)}
    else:
        strict = attributes.admit(
            session,
            workspace_id=workspace_id,
            runtime=runtime,
            records=[row.values for row in valid],
            typed=typed,
        )
        schema = runtime.profiles.attributes(workspace_id)
        records = [(row.external_id or "", _values(row.values, schema)) for row in valid]
        results = runtime.profiles.upsert_profiles(workspace_id, records, strict=strict)
        for row, result in zip(valid, results, strict=True):
            if result.ok and result.pid is not None:
                found[id(row)] = result.pid
            else:
                row.code = result.errors[0].code if result.errors else "attribute_type_mismatch"
                row.message = "; ".join(error.message for error in result.errors)
        evaluation.on_profiles_written(
            session, runtime=runtime, workspace_id=workspace_id, pids=list(found.values())
        )
    return [found.get(id(row)) for row in rows]


@dataclass(frozen=True)
class Checkpoint:
    """Where an import stood after some rows: its pids, the size of ``errors.csv``, and the
    position of the reader that got there (``PYTHON``: rows read; ``ENGINE``: staged records)."""

    pids: BitMap
    errors_bytes: int
    reader: int
    position: int


PYTHON, ENGINE = 0, 1
_STATE_HEADER = struct.Struct("<QQB")


def save_state(directory: Path, processed: int, checkpoint: Checkpoint) -> None:
    """Write the checkpoint of ``processed`` rows atomically (before the job's own checkpoint)."""
    final = directory / f"state-{processed}"
    partial = directory / f"state-{processed}.partial"
    with partial.open("wb") as out:
        header = (checkpoint.errors_bytes, checkpoint.position, checkpoint.reader)
        out.write(_STATE_HEADER.pack(*header))
        out.write(checkpoint.pids.serialize())
        out.flush()
        os.fsync(out.fileno())
    partial.replace(final)


def load_state(directory: Path, processed: int, reader: int) -> Checkpoint | None:
    """The checkpoint at ``processed`` rows written by ``reader``, None if there is none."""
    path = directory / f"state-{processed}"
    if processed == 0 or not path.exists():
        return None
    data = path.read_bytes()
    errors_bytes, position, written_by = _STATE_HEADER.unpack_from(data)
    if written_by != reader:
        return None
    pids = BitMap.deserialize(data[_STATE_HEADER.size :])
    return Checkpoint(pids, errors_bytes, reader, position)


def drop_states(directory: Path, keep: int | None) -> None:
    """Delete checkpoints other than ``keep`` (all of them with None), and stray partials."""
    for path in directory.glob("state-*"):
        if path.name != f"state-{keep}":
            path.unlink(missing_ok=True)


def error_lines(rows: Sequence[Row]) -> str:
    """The CSV lines of refused rows."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for row in rows:
        writer.writerow([row.number, row.line, row.code, _safe(row.message or "")])
    return buffer.getvalue()


def error_report(data_dir: Path, job: JobRow) -> Path | Iterator[str]:
    """Every refused row of a job as CSV (``row,line,code,message``): an import's file of all
    of them, or else the lines of the errors the job kept (the first 1,000)."""
    path = errors_csv(data_dir, job)
    if path is not None:
        return path
    kept = [
        Row(
            int(error.get("row") or 0),
            int(error.get("line") or 0),
            code=str(error.get("code", "")),
            message=str(error.get("message", "")),
        )
        for error in job.errors or []
    ]
    return iter([ERROR_HEADER, error_lines(kept)])


def errors_csv(data_dir: Path, job: JobRow) -> Path | None:
    """The file of every refused row of an import job, None when the job kept none."""
    upload = (job.payload or {}).get("upload")
    if job.handler not in UPLOAD_HANDLERS or not isinstance(upload, str):
        return None
    path = folder(data_dir, job.workspace_id, upload) / ERRORS
    return path if path.exists() else None


UPLOAD_GRACE = timedelta(hours=1)
"""How long after its last write an upload may be swept: far longer than any upload arrives in
or waits for its job's commit."""
SWEEP_BATCH = 500
"""Uploads whose jobs one sweep statement looks up."""


def last_written(path: Path) -> float:
    """When the file was last written; infinitely recent if it is gone (nothing to sweep)."""
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")


def sweep_uploads(session: Session, *, data_dir: Path, now: datetime) -> int:
    """Delete the uploaded files no live import will read; how many went.

    An import's handler deletes its upload when it ends; this catches the rest: uploads of
    imports cancelled while queued (their handler never runs) and of requests that died before
    queuing their job. An upload written to within :data:`UPLOAD_GRACE` is kept
    whatever its job, since it may still be arriving. An errors file stays for download;
    a folder left with nothing else goes.
    """
    root = Path(data_dir) / "imports"
    if not root.is_dir():
        return 0
    cutoff = (now - UPLOAD_GRACE).timestamp()
    written = last_written
    uploads = (path for path in root.glob(f"*/*/{UPLOAD}") if written(path) < cutoff)
    stale = {path.parent.name: path.parent for path in uploads}
    names = sorted(stale)
    upload_of = JobRow.payload["upload"].as_string()
    removed = 0
    for start in range(0, len(names), SWEEP_BATCH):
        batch = names[start : start + SWEEP_BATCH]
        live = set(
            session.scalars(
                select(upload_of).where(
                    JobRow.handler.in_(UPLOAD_HANDLERS),
                    JobRow.state.in_(static_members.LIVE_JOB_STATES),
                    upload_of.in_(batch),
                )
            )
        )
        for name in batch:
            if name not in live:
                directory = stale[name]
                remove_upload(directory, keep_errors=(directory / ERRORS).exists())
                removed += 1
    return removed


def remove_upload(directory: Path, *, keep_errors: bool) -> None:
    """Delete the upload and its checkpoints (and the errors file unless ``keep_errors``)."""
    if not keep_errors:
        shutil.rmtree(directory, ignore_errors=True)
        return
    (directory / UPLOAD).unlink(missing_ok=True)
    drop_states(directory, None)


def _values(values: dict[str, Any], schema: dict[str, AttributeType]) -> dict[str, Any]:
    typed: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, str) and schema.get(name) in JSON_TYPES:
            with contextlib.suppress(orjson.JSONDecodeError):
                value = orjson.loads(value)
        typed[name] = value
    return typed


def _safe(text: str) -> str:
    """Text that no spreadsheet runs as a formula, and that is valid UTF-8."""
    return defused(text.encode("utf-8", "replace").decode("utf-8"))
