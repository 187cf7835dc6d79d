"""Event files (CSV, TSV or NDJSON, gzipped or not; Parquet) imported as jobs, with per-row errors.

The upload is streamed to disk as a profile import's is (``services.imports.folder``), its rows
read by the same reader (``services.import_formats``: the profile id column is
``profile_id``), turned into events and written in chunks through :func:`events.write`, with
a checkpoint after each. A CSV or Parquet row is ``profile_id``, ``event``, optionally
``timestamp`` and ``event_id``, and its other columns are properties (CSV cells are text, typed
as a profile import's cells are; Parquet values keep their types, read by DuckDB); an NDJSON
record is the object ``POST /v1/events`` takes. A row without an ``event_id``
gets ``<upload id>:<row>``, so a chunk written again after a crash stores nothing twice.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError as PydanticValidationError
from sqlalchemy.orm import Session

from audiences import queue
from audiences.engines.base import EventRecord
from audiences.errors import Unprocessable, ValidationFailed
from audiences.kit import parquet
from audiences.kit.parquet import ParquetUnreadable
from audiences.schemas.attributes import AttributeType
from audiences.schemas.events import EventFileFormat, EventWrite
from audiences.schemas.jobs import JobKind
from audiences.services import events
from audiences.services.callers import Caller
from audiences.services.import_formats import (
    FileRefused,
    ImportFormat,
    Layout,
    Row,
    check_id,
    layout,
    rows,
)
from audiences.services.imports import EVENT_IMPORT_HANDLER, JSON_TYPES, UPLOAD
from audiences.services.runtime import Runtime
from audiences.store.tables import JobRow

ID_COLUMN = "profile_id"
BUILT_IN = ("event", "timestamp", "event_id")
READERS = {
    EventFileFormat.CSV: ImportFormat.CSV,
    EventFileFormat.TSV: ImportFormat.TSV,
    EventFileFormat.NDJSON: ImportFormat.NDJSON,
}
"""The formats the profile import's reader reads; Parquet is read by DuckDB (``kit.parquet``)."""


def accept(
    session: Session,
    *,
    caller: Caller,
    upload: Path,
    fmt: EventFileFormat,
    digest: str,
    max_attempts: int,
    idempotency_key: str | None = None,
) -> JobRow:
    """Check the file's header and queue its ``events.import`` job (422 ``import_file_invalid``
    when it cannot be imported at all)."""
    try:
        columns = _columns(upload, fmt)
    except (FileRefused, ParquetUnreadable) as exc:
        raise Unprocessable(str(exc), code="import_file_invalid") from None
    missing = [name for name in (ID_COLUMN, "event") if columns is not None and name not in columns]
    if missing:
        raise Unprocessable(f"the file has no column {missing[0]!r}", code="import_file_invalid")
    payload = {
        "upload": upload.parent.name,
        "format": fmt.value,
        "bytes": upload.stat().st_size,
        "sha256": digest,
    }
    dedupe = None if idempotency_key is None else f"events.import:{idempotency_key}"
    job = queue.enqueue(
        session,
        workspace_id=caller.workspace_id,
        kind=JobKind.IMPORT,
        handler=EVENT_IMPORT_HANDLER,
        payload=payload,
        dedupe_key=dedupe,
        max_attempts=max_attempts,
        created_by=caller.actor,
    )
    if job.payload.get("upload") != payload["upload"] and job.payload.get("sha256") != digest:
        raise ValidationFailed(
            "this Idempotency-Key was used for another import", code="idempotency_key_reused"
        )
    return job


@dataclass(frozen=True)
class Outcome:
    """What a chunk did: counts by name, and the rows refused (with ``code`` and ``message``)."""

    counts: dict[str, int]
    refused: list[Row]


def chunks(directory: Path, fmt: EventFileFormat, *, size: int, skip: int) -> Iterator[list[Row]]:
    """The file's rows after the first ``skip``, in lists of ``size``."""
    path = directory / UPLOAD
    if fmt is EventFileFormat.PARQUET:
        found: Iterator[Row] = _parquet_rows(path)
    elif fmt is EventFileFormat.NDJSON:
        found = rows(path, READERS[fmt], Layout(ID_COLUMN, (), {"*": 0}))
    else:
        shape = layout(path, READERS[fmt], id_column=ID_COLUMN, attributes="*")
        found = rows(path, READERS[fmt], shape)
    found = islice(found, skip, None)
    while chunk := list(islice(found, size)):
        yield chunk


def _columns(path: Path, fmt: EventFileFormat) -> list[str] | None:
    """The file's columns; for NDJSON, whose records name their fields, the first record's
    (a file whose first record is no event is not an event file), None when it has none."""
    if fmt is EventFileFormat.PARQUET:
        return parquet.column_names(path)
    if fmt is EventFileFormat.NDJSON:
        with closing(rows(path, READERS[fmt], Layout(ID_COLUMN, (), {"*": 0}))) as found:
            first = next(found, None)
        if first is None:
            return None
        return [*([ID_COLUMN] if first.external_id is not None else []), *first.values]
    shape = layout(path, READERS[fmt], id_column=ID_COLUMN, attributes="*")
    return list(shape.positions)


def _parquet_rows(path: Path) -> Iterator[Row]:
    for number, values in enumerate(parquet.rows(path), start=1):
        external_id = values.pop(ID_COLUMN, None)
        problem = check_id(external_id) if isinstance(external_id, str) else None
        if not isinstance(external_id, str) or problem is not None:
            code, message = problem or ("id_missing", f"no string {ID_COLUMN!r} in the row")
            yield Row(number, number, code=code, message=message)
        else:
            yield Row(number, number, external_id=external_id, values=values)


def write_chunk(
    session: Session,
    *,
    workspace_id: str,
    runtime: Runtime,
    upload_id: str,
    fmt: EventFileFormat,
    chunk: Sequence[Row],
    max_future: timedelta,
    received_at: datetime,
) -> Outcome:
    """Write one chunk's events; refused rows get their ``code`` and ``message``."""
    typed = fmt in (EventFileFormat.NDJSON, EventFileFormat.PARQUET)
    columns = fmt is not EventFileFormat.NDJSON
    schema = runtime.profiles.event_properties(workspace_id)
    ready: list[tuple[Row, EventRecord]] = []
    for row in chunk:
        if row.code is None:
            record = _record(row, upload_id, columns, typed, schema, received_at)
            if record is not None:
                ready.append((row, record))
    results = events.write(
        session,
        workspace_id=workspace_id,
        runtime=runtime,
        records=[record for _, record in ready],
        limits=events.Limits(max(len(ready), 1), max_future),
        received_at=received_at,
        typed=typed,
    )
    counts = {"rows": len(chunk), "written": 0, "duplicates": 0, "invalid": 0}
    for (row, _), result in zip(ready, results, strict=True):
        if not result.ok:
            row.code = result.errors[0].code
            row.message = "; ".join(error.message for error in result.errors)
        elif result.duplicate:
            counts["duplicates"] += 1
        else:
            counts["written"] += 1
    refused = [row for row in chunk if row.code is not None]
    counts["invalid"] = len(refused)
    return Outcome(counts, refused)


def _record(
    row: Row,
    upload_id: str,
    columns: bool,
    typed: bool,
    schema: dict[str, AttributeType],
    received_at: datetime,
) -> EventRecord | None:
    """The row as an event (its properties its other columns, when the file has columns), or
    None with the row's ``code`` and ``message`` set."""
    values = {ID_COLUMN: row.external_id, **row.values}
    if columns:
        properties = {k: v for k, v in values.items() if k != ID_COLUMN and k not in BUILT_IN}
        values = {k: v for k, v in values.items() if k == ID_COLUMN or k in BUILT_IN}
        values["properties"] = properties if typed else _text_values(properties, schema)
    try:
        event = EventWrite.model_validate(values)
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        row.code = "timestamp_invalid" if field == "timestamp" else "row_malformed"
        row.message = f"{field}: {first['msg']}"
        return None
    return EventRecord(
        event.profile_id,
        event.event,
        event.timestamp or received_at,
        event.properties,
        event.event_id or f"{upload_id}:{row.number}",
    )


def _text_values(values: dict[str, Any], schema: dict[str, AttributeType]) -> dict[str, Any]:
    """CSV cells of list and JSON properties parsed as JSON; the rest stay text."""
    typed: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, str) and schema.get(name) in JSON_TYPES:
            with contextlib.suppress(orjson.JSONDecodeError):
                value = orjson.loads(value)
        typed[name] = value
    return typed
