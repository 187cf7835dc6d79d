"""External audiences' sources: checked when saved, and pulled into a member set when synced.

A file source is copied to a private temporary file first (fetched from its URL with httpx,
streaming, or read from its path under ``AUDIENCES_SYNC_ROOT``), under a size cap and, for a
URL, a deadline; the copy is then read with the import readers (CSV and NDJSON by
``import_formats``, Parquet by ``kit.parquet``), so a file that changes while it is fetched is
read as one version, and a bad row is reported on its own while the good ones count. A SQL
source runs on the profile engine (``select_query_pids``). Whatever goes wrong raises
:class:`SyncFailed` with a stable code; the caller keeps the members as they were.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO
from urllib.parse import urljoin

import httpx
from pyroaring import BitMap

from audiences.config import Settings
from audiences.engines import queries
from audiences.errors import AudiencesError, ErrorDetail, InvalidParameter, ValidationFailed
from audiences.kit import parquet
from audiences.kit.files import private_dir
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
from audiences.services import egress, import_formats, import_staged
from audiences.services.import_formats import FileRefused, ImportFormat, Layout, Row
from audiences.services.runtime import Runtime

CHUNK_BYTES = 1 << 16
MAX_REDIRECTS = 3
RESOLVE_ROWS = 50_000
"""Ids resolved to pids per engine call when Python reads the file."""
STAGED_RANGE = 1_000_000
"""Records resolved per engine statement when the engine reads a CSV itself."""


class SyncFailed(Exception):
    """A sync could not produce a member set: ``code`` names why (``sync_fetch_failed``,
    ``sync_timeout``, ``sync_too_large``, ``sync_file_invalid`` …), the message says it."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True)
class SourceRules:
    """What the deployment allows sources to name, and the engine's SQL dialect."""

    allow_private: bool = False
    root: Path | None = None
    max_bytes: int = 1024**3
    timeout_seconds: float = 60.0
    dialect: str = "duckdb"
    work_dir: Path | None = None
    """Where fetched files are kept while read (default: the system's temporary folder)."""

    def for_workspace(self, workspace_id: str) -> SourceRules:
        """The rules for one workspace's sources: its path sources lie under its own folder,
        ``<AUDIENCES_SYNC_ROOT>/<workspace id>``, so no workspace names another's files."""
        root = None if self.root is None else self.root / workspace_id
        return replace(self, root=root)


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
            _allowed_path(source.path, rules.root)
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
) -> tuple[BitMap, int]:
    """The member set a source names now, and how many rows (ids, for SQL) it read."""
    if isinstance(source, SqlSource):
        try:
            members = runtime.profiles.select_query_pids(
                workspace_id, source.query, timeout_seconds=rules.timeout_seconds
            )
        except AudiencesError as error:  # refused or failed on the data: the sync fails
            raise SyncFailed(_sql_failure(error), code=error.code) from None
        return members, len(members)
    with _fetched(source, rules) as path:
        shape = _layout(path, source)
        counted = None
        if shape is not None and source.format is SyncFormat.CSV:
            counted = _staged(runtime, workspace_id, path, shape, on_row_error)
        if counted is None:
            counted = _resolve(runtime, workspace_id, _rows(path, source, shape), on_row_error)
    members, read, invalid = counted
    if read and read == invalid:
        message = f"none of the file's {read} rows holds a valid id"
        raise SyncFailed(message, code="sync_file_invalid")
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
    runtime: Runtime, workspace_id: str, path: Path, shape: Layout, on_row_error: RowError
) -> Counted | None:
    """A CSV of ids read by the engine itself, set-based, as a static import's is
    (``import_staged``); None when the engine cannot, and Python reads it instead."""
    total = import_formats.count_rows(path, ImportFormat.CSV)
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
            start = mapped.records + 1 if last else stop
    return members, read, invalid


def _resolve(
    runtime: Runtime, workspace_id: str, found: Generator[Row], on_row_error: RowError
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


class _Fetched:
    """A private temporary copy of a file source, removed when the block ends."""

    def __init__(self, source: FileSource, rules: SourceRules) -> None:
        self.source = source
        self.rules = rules
        folder = rules.work_dir
        if folder is not None:
            private_dir(folder)
        self.file = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed by __exit__)
            prefix="sync-", dir=folder, delete=False
        )
        self.path = Path(self.file.name)

    def __enter__(self) -> Path:
        try:
            with self.file as out:
                if isinstance(self.source, UrlFileSource):
                    _download(self.source.url, out, self.rules)
                elif isinstance(self.source, PathFileSource):
                    _copy(self.source.path, out, self.rules)
        except BaseException:
            self.path.unlink(missing_ok=True)
            raise
        return self.path

    def __exit__(self, *_: object) -> None:
        self.path.unlink(missing_ok=True)


def _fetched(source: FileSource, rules: SourceRules) -> _Fetched:
    return _Fetched(source, rules)


def _download(url: str, out: IO[bytes], rules: SourceRules) -> None:
    """Stream ``url`` into ``out`` (a redirect followed only to a URL the guard allows too)."""
    deadline = time.monotonic() + rules.timeout_seconds
    timeout = httpx.Timeout(rules.timeout_seconds)
    try:
        with egress.pinned_client(allow_private=rules.allow_private, timeout=timeout) as client:
            for _ in range(MAX_REDIRECTS + 1):
                _guard(url, rules)
                with client.stream("GET", url) as response:
                    if response.is_redirect and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    if response.status_code != 200:
                        raise SyncFailed(
                            f"the source answered HTTP {response.status_code}",
                            code="sync_fetch_failed",
                        )
                    _check_length(response.headers.get("content-length"), rules.max_bytes)
                    _save(response.iter_bytes(CHUNK_BYTES), out, rules.max_bytes, deadline)
                    return
    except InvalidParameter as refused:  # the address the name resolves to as it connects
        raise SyncFailed(refused.detail, code=refused.code) from None
    except httpx.TimeoutException:
        raise _timed_out(rules) from None
    except httpx.HTTPError as error:
        message = f"the source could not be fetched: {type(error).__name__}"
        raise SyncFailed(message, code="sync_fetch_failed") from None
    raise SyncFailed(f"more than {MAX_REDIRECTS} redirects", code="sync_fetch_failed")


def _guard(url: str, rules: SourceRules) -> None:
    """The SSRF guard on each URL before it is requested (scheme, credentials, a literal
    address); the address a name resolves to is checked as the connection is made
    (``egress.pinned_client``), so a name cannot point elsewhere between check and connect."""
    try:
        egress.checked_url(url, allow_private=rules.allow_private)
    except InvalidParameter as refused:
        raise SyncFailed(refused.detail, code=refused.code) from None


def _check_length(header: str | None, limit: int) -> None:
    if header is not None and header.isdigit() and int(header) > limit:
        raise _too_large(limit)


def _save(chunks: Iterator[bytes], out: IO[bytes], limit: int, deadline: float) -> None:
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        if time.monotonic() > deadline:
            raise SyncFailed("the source took too long to send the file", code="sync_timeout")
        out.write(chunk)


def _copy(path: str, out: IO[bytes], rules: SourceRules) -> None:
    found = _allowed_path(path, rules.root)
    try:
        with found.open("rb") as source:
            _save(iter(lambda: source.read(CHUNK_BYTES), b""), out, rules.max_bytes, float("inf"))
    except (FileNotFoundError, IsADirectoryError, PermissionError) as error:
        message = f"no readable file at {path}: {type(error).__name__}"
        raise SyncFailed(message, code="sync_fetch_failed") from None


def _allowed_path(path: str, root: Path | None) -> Path:
    """The path resolved (links followed), when it lies under the sync folder (the
    workspace's own, see :meth:`SourceRules.for_workspace`)."""
    if root is None:
        raise SyncFailed(
            "this server reads no source files: AUDIENCES_SYNC_ROOT is not set",
            code="sync_path_not_allowed",
        )
    if not Path(path).is_absolute():
        raise SyncFailed("a source path is absolute", code="sync_path_not_allowed")
    resolved = Path(path).resolve()
    if not resolved.is_relative_to(root.resolve()):
        message = f"{path} is outside this workspace's sync folder, {root}"
        raise SyncFailed(message, code="sync_path_not_allowed")
    return resolved


def _too_large(limit: int) -> SyncFailed:
    return SyncFailed(f"the file is over the limit of {limit} bytes", code="sync_too_large")


def _timed_out(rules: SourceRules) -> SyncFailed:
    message = f"the source did not send the file within {rules.timeout_seconds:g} s"
    return SyncFailed(message, code="sync_timeout")
