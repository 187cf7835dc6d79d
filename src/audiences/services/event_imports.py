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
import re
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
from audiences.engines.coerce import valid_unicode
from audiences.errors import Unprocessable, ValidationFailed
from audiences.kit import parquet
from audiences.kit.parquet import ParquetUnreadable
from audiences.schemas.attributes import AttributeType
from audiences.schemas.events import EVENT_NAME, ID_PATTERN, EventFileFormat, EventWrite
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
    first_run: bool = False,
    dedupe_window: timedelta = events.DEDUPE_WINDOW,
    accepted_at: datetime | None = None,
) -> Outcome:
    """Write one chunk's events; refused rows get their ``code`` and ``message``.

    On the ``first_run`` of the upload's job (no attempt started before it, so none wrote any
    of its events) the ids generated for rows without one are new: the write does not look
    them up, a scan of the workspace's events on DuckDB that made an import's cost grow with
    the square of its size. Ids the file gives are always looked up, among the events received
    within ``dedupe_window`` before the upload was ``accepted_at`` or since: a retry may come
    after the window has passed over the rows an earlier attempt wrote (its backoff, a worker
    down for a weekend), and must still find them."""
    typed = fmt in (EventFileFormat.NDJSON, EventFileFormat.PARQUET)
    columns = fmt is not EventFileFormat.NDJSON
    schema = runtime.profiles.event_properties(workspace_id)
    fields = [_fields(row, columns, typed, schema) if row.code is None else None for row in chunk]
    plain = Plain(_nul_free(fields))
    ready: list[tuple[Row, EventRecord]] = []
    generated: list[str] = []
    for row, given in zip(chunk, fields, strict=True):
        if given is not None:
            event_id = f"{upload_id}:{row.number}"
            record = plain.record(row.external_id, given, received_at, event_id) or _record(
                row, given, received_at, event_id
            )
            if record is not None:
                ready.append((row, record))
                if first_run and record.event_id == event_id:
                    generated.append(event_id)
    results = events.write(
        session,
        workspace_id=workspace_id,
        runtime=runtime,
        records=[record for _, record in ready],
        limits=events.Limits(max(len(ready), 1), max_future, dedupe_window),
        received_at=received_at,
        typed=typed,
        known_new=frozenset(generated),
        remembered_from=accepted_at,
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


class Plain:
    """The events of a chunk that ``POST /v1/events`` would take as they are, made records
    without pydantic: a yes or no per row, each event name judged once per chunk.

    It passes only what :class:`EventWrite` accepts unchanged: the fields it knows, a string
    name of its pattern, a time in the common RFC 3339 form (``2024-05-01T12:00:00Z``,
    ``.123456``, ``+02:00``; read by ``datetime.fromisoformat``, which gives the same instant),
    a JSON object of properties (with no NUL character in the chunk), a string ``event_id`` of
    its pattern or none. Any other row (None) is validated by the model, to say why it is
    refused or to read it as the model does. Validating each row by the model cost ~8 µs; a
    million rows read and checked here cost 1-2 s."""

    def __init__(self, nul_free: bool) -> None:
        self._nul_free = nul_free
        self._names: dict[str, bool] = {}

    def record(
        self, external_id: str | None, fields: dict[str, Any], received_at: datetime, event_id: str
    ) -> EventRecord | None:
        """The row's event (``event_id`` when it gives none), or None to validate it."""
        if external_id is None or not self._nul_free or not fields.keys() <= FIELDS:
            return None
        name = fields.get("event")
        if type(name) is not str or not self._name(name):
            return None
        when = fields.get("timestamp")
        if when is not None:
            if type(when) is not str or not PLAIN_TIME.fullmatch(when):
                return None
            try:
                when = datetime.fromisoformat(when)
            except ValueError:
                return None
        properties = fields.get("properties", _NONE)
        if properties is _NONE:
            properties = {}
        elif type(properties) is not dict:
            return None
        given = fields.get("event_id")
        if given is not None and not _valid(EVENT_ID, given):
            return None
        return EventRecord(external_id, name, when or received_at, properties, given or event_id)

    def _name(self, name: str) -> bool:
        known = self._names.get(name)
        if known is None:
            known = self._names[name] = _valid(EVENT_NAME_PATTERN, name)
        return known


FIELDS = frozenset({"event", "timestamp", "properties", "event_id"})
"""The fields of an event but ``profile_id``."""
PLAIN_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})")
"""The times :class:`Plain` reads itself; others (``t``, a space, ``z``, nanoseconds) are
read by the model."""
EVENT_NAME_PATTERN = re.compile(EVENT_NAME.strip("^$"))
EVENT_ID = re.compile(ID_PATTERN.strip("^$"))
_NONE = object()


def _valid(pattern: re.Pattern[str], value: object) -> bool:
    """Whether ``value`` is a string of valid Unicode (no lone surrogate) that ``pattern``
    matches whole."""
    if type(value) is not str or pattern.fullmatch(value) is None:
        return False
    return value.isascii() or valid_unicode(value)


def _fields(
    row: Row, columns: bool, typed: bool, schema: dict[str, AttributeType]
) -> dict[str, Any]:
    """The row's fields as ``POST /v1/events`` takes them, but ``profile_id`` (the row's
    ``external_id``): a file with columns has its properties in its other columns."""
    if not columns:
        return row.values
    fields = {k: v for k, v in row.values.items() if k in BUILT_IN}
    properties = {k: v for k, v in row.values.items() if k not in BUILT_IN and k != ID_COLUMN}
    fields["properties"] = properties if typed else _text_values(properties, schema)
    return fields


def _nul_free(fields: Sequence[dict[str, Any] | None]) -> bool:
    """Whether no property of the chunk holds a NUL character, in one pass over their JSON
    (False when unsure: then each row is validated in full, which says which one does)."""
    try:
        text = orjson.dumps([given.get("properties") for given in fields if given is not None])
    except TypeError:
        return False
    return b"\\u0000" not in text


def _record(
    row: Row, fields: dict[str, Any], received_at: datetime, event_id: str
) -> EventRecord | None:
    """The row validated as ``POST /v1/events`` validates an event, or None with the row's
    ``code`` and ``message`` set (the rows :class:`Plain` does not pass)."""
    try:
        event = EventWrite.model_validate({ID_COLUMN: row.external_id, **fields})
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
        event.event_id or event_id,
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
