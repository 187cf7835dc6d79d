"""Where an external audience's members come from (its ``source``) and how its last sync went.

Three kinds of source, told apart by ``type``: a file at a URL or under the operator's sync
folder (fetched on the refresh policy, its ids replacing the members), a read-only SQL query over
the workspace's profiles and events (``warehouse-managed``: its ids are the members), or
``push`` (the client adds, removes and replaces members as a static audience's).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

MAX_QUERY_CHARS = 10_000
"""The longest SQL source query, in characters."""
MAX_URL_CHARS = 2048
MAX_PATH_CHARS = 1024


class SourceType(StrEnum):
    """Where the members come from."""

    FILE = "file"
    SQL = "sql"
    PUSH = "push"


class SyncFormat(StrEnum):
    """What a file source holds."""

    CSV = "csv"
    NDJSON = "ndjson"
    PARQUET = "parquet"


class SyncStatus(StrEnum):
    """Where an external audience's sync stands."""

    PENDING = "pending"
    SYNCING = "syncing"
    SYNCED = "synced"
    FAILED = "failed"


class _Described(BaseModel):
    """What every source may say about the system that holds the list."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(
        default=None, min_length=1, max_length=100, description="The system holding the list."
    )
    external_id: str | None = Field(
        default=None, max_length=255, description="The list's id in that system."
    )


class FileSource(_Described):
    """A file of ids: what every file source has (``UrlFileSource``, ``PathFileSource``)."""

    type: Literal[SourceType.FILE]
    format: SyncFormat = Field(description="`csv`, `ndjson` (either may be gzipped) or `parquet`.")
    id_column: str = Field(
        default="id",
        min_length=1,
        max_length=200,
        description="The column (CSV, Parquet) or key (NDJSON) holding each member's id.",
    )


class UrlFileSource(FileSource):
    """A file fetched from an http(s) ``url`` at each sync."""

    url: str = Field(
        min_length=1,
        max_length=MAX_URL_CHARS,
        description="http(s) URL of the file; it passes the SSRF guard when saved and fetched.",
    )


class PathFileSource(FileSource):
    """A file read from a ``path`` under ``AUDIENCES_SYNC_ROOT`` at each sync."""

    path: str = Field(
        min_length=1,
        max_length=MAX_PATH_CHARS,
        description=(
            "Absolute path of the file, under the operator's `AUDIENCES_SYNC_ROOT`/<workspace id>/."
        ),
    )


class SqlSource(_Described):
    """A read-only query: one SELECT over the workspace's ``profiles`` and ``events`` tables
    returning one column of external ids (text) or pids (integers)."""

    type: Literal[SourceType.SQL]
    query: str = Field(
        min_length=1,
        max_length=MAX_QUERY_CHARS,
        description="`SELECT external_id FROM profiles WHERE …`, in the profile engine's SQL.",
    )


class PushSource(_Described):
    """Members written by the client (add, remove, replace, imports) as a static audience's."""

    type: Literal[SourceType.PUSH]


def _tag(value: Any) -> str | None:
    """Which source a value is: its ``type``, and for a file whether it names a path (a file
    naming a ``url``, or neither, is read as a URL source and told what it lacks)."""
    if isinstance(value, dict):
        kind, path_only = value.get("type"), "path" in value and "url" not in value
    else:
        kind, path_only = getattr(value, "type", None), isinstance(value, PathFileSource)
    if kind == SourceType.FILE:
        return "path" if path_only else "url"
    return None if kind is None else str(kind)


SyncSource = Annotated[
    Annotated[UrlFileSource, Tag("url")]
    | Annotated[PathFileSource, Tag("path")]
    | Annotated[SqlSource, Tag("sql")]
    | Annotated[PushSource, Tag("push")],
    Discriminator(_tag),
]
"""An external audience's ``source``: the fields depend on ``type`` (and a file's on whether
it names a ``url`` or a ``path``: exactly one)."""

PulledSource = UrlFileSource | PathFileSource | SqlSource
"""A source a sync job pulls members from."""


def push_source() -> PushSource:
    """The source of an external audience that names none: the client pushes its members."""
    return PushSource(type=SourceType.PUSH)


class SyncProgress(BaseModel):
    """How far a running sync has got, from its job's last checkpoint (at most a second old):
    a file source's bytes fetched, then the rows read into the member set."""

    rows_read: int = Field(description="Rows (ids, for SQL) read so far.")
    rows_total: int | None = Field(
        default=None,
        description="Rows the source holds, once known: counted from a CSV or NDJSON file's "
        "lines once it is fetched (exact at the end), a Parquet file's or a query's at the end.",
    )
    bytes_fetched: int | None = Field(
        default=None, description="A file source: bytes copied so far (null for SQL)."
    )
    bytes_total: int | None = Field(
        default=None,
        description="A file source's size, when known: a URL's `Content-Length`, a path's size.",
    )


class SyncState(BaseModel):
    """How an external audience's sync stands: its status, when it last succeeded, why the last
    one failed, and the job of the latest sync."""

    status: SyncStatus = Field(
        description="`pending` (never synced), `syncing` (a sync job is queued or running), "
        "`synced` or `failed` (how the last one ended; a failed sync keeps the members)."
    )
    last_synced_at: datetime | None = Field(
        default=None, description="When a sync last succeeded (push: when a write was applied)."
    )
    last_attempt_at: datetime | None = Field(
        default=None, description="When the last sync finished, however it went."
    )
    last_error: str | None = Field(default=None, description="Why the last sync failed.")
    last_error_code: str | None = Field(
        default=None, description="The stable code of that failure (`sync_fetch_failed` …)."
    )
    job_id: str | None = Field(default=None, description="The job of the latest sync.")
    progress: SyncProgress | None = Field(
        default=None,
        description="While the sync's job runs: how far it has got (the job's `progress` "
        "counts the same rows). Null otherwise.",
    )
    last_run_id: str | None = Field(
        default=None, description="The run the last sync recorded (its changes: `…/changes`)."
    )
