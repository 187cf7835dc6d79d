"""External audiences' sources: checked when saved, and pulled into a member set when synced.

A file source is copied to a private temporary file first (``services/sync_fetch``: from its
URL through the SSRF guard, or from its path under the workspace's sync folder), under a size
cap and, for a URL, a deadline; the copy is then read with the import readers (CSV and NDJSON by
``import_formats``, Parquet by ``kit.parquet``), so a file that changes while it is fetched is
read as one version, and a bad row is reported on its own while the good ones count. A SQL
source runs on the profile engine (``select_query_pids``). Whatever goes wrong raises
:class:`~audiences.errors.SyncFailed` with a stable code; the caller keeps the members as
they were.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from contextlib import closing
from pathlib import Path

from pyroaring import BitMap

from audiences.config import Settings
from audiences.engines import queries
from audiences.errors import (
    AudiencesError,
    ErrorDetail,
    SyncFailed,
    ValidationFailed,
)
from audiences.kit import parquet
from audiences.membership.bitmaps import from_numpy
from audiences.schemas.syncs import (
    FileSource,
    PathFileSource,
    PulledSource,
    SqlSource,
    SyncFormat,
    SyncSource,
    UrlFileSource,
)
from audiences.services import egress, import_formats, import_staged, sync_fetch, sync_progress
from audiences.services.import_formats import FileRefused, ImportFormat, Layout, Row
from audiences.services.runtime import Runtime
from audiences.services.sync_progress import Tracker
from audiences.services.sync_rules import SourceRules

RESOLVE_ROWS = 50_000
"""Ids resolved to pids per engine call when Python reads the file."""
STAGED_RANGE = 1_000_000
"""Records resolved per engine statement when the engine reads a CSV itself."""


def rules_of(settings: Settings, *, dialect: str) -> SourceRules:
    """The deployment's rules for sources, from its settings and profile engine."""
    return SourceRules(
        allow_private=settings.egress_allow_private,
        root=settings.sync_root,
        max_bytes=settings.sync_max_bytes,
        timeout_seconds=settings.sync_timeout_seconds,
        dialect=dialect,
        work_dir=settings.data_dir / "syncs",
    )


RowError = Callable[[Row], None]
"""Told of each row of a file that holds no usable id."""


def check(source: SyncSource, rules: SourceRules) -> None:
    """Refuse a source the deployment does not allow: a URL the SSRF guard refuses
    (400 ``url_not_allowed``), a path outside the sync folder (422 ``sync_path_not_allowed``),
    SQL that is not a safe member query (422 ``sync_query_invalid``, with positions)."""
    if isinstance(source, UrlFileSource):
        egress.checked_url(source.url, allow_private=rules.allow_private)
    elif isinstance(source, PathFileSource):
        try:
            sync_fetch.allowed_path(source.path, rules.root)
        except SyncFailed as failed:
            location = ("body", "source", "path")
            raise ValidationFailed(
                failed.message,
                code=failed.code,
                errors=[ErrorDetail(failed.code, failed.message, location)],
            ) from None
    elif isinstance(source, SqlSource):
        queries.check_select(source.query, rules.dialect)


def pull(
    runtime: Runtime,
    *,
    workspace_id: str,
    source: PulledSource,
    rules: SourceRules,
    on_row_error: RowError,
    tracker: Tracker | None = None,
) -> tuple[BitMap, int]:
    """The member set a source names now, and how many rows (ids, for SQL) it read;
    ``tracker`` follows the bytes fetched and the rows read as they go."""
    tracker = tracker or sync_progress.quiet()
    if isinstance(source, SqlSource):
        try:
            members = runtime.profiles.select_query_pids(
                workspace_id, source.query, timeout_seconds=rules.timeout_seconds
            )
        except AudiencesError as error:  # refused or failed on the data: the sync fails
            raise SyncFailed(_sql_failure(error), code=error.code) from None
        tracker.done(len(members))
        return members, len(members)
    with sync_fetch.fetched(source, rules, tracker) as path:
        shape = _layout(path, source)
        counted = None
        if shape is not None:
            fmt = ImportFormat(source.format.value)
            total = import_formats.count_rows(path, fmt)
            tracker.counted(total)
            if fmt is ImportFormat.CSV:
                counted = _staged(runtime, workspace_id, path, shape, total, tracker, on_row_error)
        if counted is None:
            rows = _rows(path, source, shape)
            counted = _resolve(runtime, workspace_id, rows, tracker, on_row_error)
    members, read, invalid = counted
    if read and read == invalid:
        message = f"none of the file's {read} rows holds a valid id"
        raise SyncFailed(message, code="sync_file_invalid")
    tracker.done(read)
    return members, read


SQL_FAILED = (
    "the SQL source failed on the workspace's data (an unknown column, a cast that fails …); "
    "the engine's own words, which may quote values, are in the server log only"
)
"""What a sync records when the engine could not run its SQL source: never the engine's message,
which can quote the values it failed on (a failed cast shows the text it cast)."""


def _sql_failure(error: AudiencesError) -> str:
    """The message a failed SQL source's sync records: the checker's and the timeout's own (they
    quote no data), a generic one for anything the engine said."""
    if error.code in (queries.CODE, "engine_query_timeout"):
        return error.detail
    return SQL_FAILED


Counted = tuple[BitMap, int, int]
"""The pids of a file's valid rows, how many rows it has, and how many of them were refused."""


def _staged(
    runtime: Runtime,
    workspace_id: str,
    path: Path,
    shape: Layout,
    total: int,
    tracker: Tracker,
    on_row_error: RowError,
) -> Counted | None:
    """A CSV of ids read by the engine itself, set-based, as a static import's is
    (``import_staged``); None when the engine cannot, and Python reads it instead."""
    found = import_staged.stage(
        runtime.profiles, workspace_id, path, ImportFormat.CSV, shape, total
    )
    if found is None:
        return None
    staged, mapped = found
    members, read, invalid, start = BitMap(), 0, 0, 0
    with closing(staged):
        while start <= mapped.records:  # past the end once the last range is done
            stop = min(start + STAGED_RANGE, mapped.records)
            last = stop == mapped.records
            result = import_staged.resolve_range(staged, mapped, start, stop, last)
            for row in result.refused:
                on_row_error(row)
            members |= from_numpy(result.pids)
            read, invalid = read + result.rows, invalid + len(result.refused)
            tracker.read(result.rows)
            start = mapped.records + 1 if last else stop
    return members, read, invalid


def _resolve(
    runtime: Runtime,
    workspace_id: str,
    found: Generator[Row],
    tracker: Tracker,
    on_row_error: RowError,
) -> Counted:
    """The pids of the rows' ids read in Python (unknown ids get empty profiles, as a static
    import's do)."""
    members, read, invalid = BitMap(), 0, 0
    with closing(found):
        while True:
            ids: list[str] = []
            for row in found:
                read += 1
                if row.code is not None or row.external_id is None:
                    invalid += 1
                    on_row_error(row)
                    continue
                ids.append(row.external_id)
                if len(ids) >= RESOLVE_ROWS:
                    break
            if not ids:
                break
            pids, _ = runtime.profiles.ensure_profiles(workspace_id, ids)
            members |= from_numpy(pids)
            tracker.read(read - tracker.rows_read)
    return members, read, invalid


def _layout(path: Path, source: FileSource) -> Layout | None:
    """Where a CSV or NDJSON file's ids are (None for Parquet, checked here too);
    ``sync_file_invalid`` when the file cannot be read at all (no header, no such column,
    not Parquet)."""
    try:
        if source.format is SyncFormat.PARQUET:
            names = parquet.column_names(path)
            if source.id_column not in names:
                raise FileRefused(f"the file has no column {source.id_column!r}: {names[:20]}")
            return None
        fmt = ImportFormat(source.format.value)
        return import_formats.layout(path, fmt, id_column=source.id_column, attributes=None)
    except (FileRefused, parquet.ParquetUnreadable, OSError) as error:
        raise SyncFailed(f"the file cannot be read: {error}", code="sync_file_invalid") from None


def _rows(path: Path, source: FileSource, shape: Layout | None) -> Generator[Row]:
    """The file's rows read in Python, each with its id or its problem."""
    if shape is None:
        return _parquet_rows(path, source.id_column)
    return import_formats.rows(path, ImportFormat(source.format.value), shape)


def _parquet_rows(path: Path, id_column: str) -> Generator[Row]:
    for number, values in enumerate(parquet.rows(path), start=1):
        value = values.get(id_column)
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            yield Row(number, number, code="id_missing", message=f"no {id_column!r} in the row")
            continue
        problem = import_formats.check_id(value)
        if problem is None:
            yield Row(number, number, external_id=value)
        else:
            yield Row(number, number, code=problem[0], message=problem[1])
