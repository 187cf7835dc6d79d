"""Where a file destination's files go, from its ``path``: a folder under the operator's
``AUDIENCES_DESTINATION_FILE_ROOT`` (``exports/crm``), or a bucket and prefix of the
operator's S3-compatible service (``s3://bucket/exports/crm``). Checked when a destination is
saved (422 with a stable code) and again at each write; each file is written whole or not at
all: a local file is renamed into place, an object is one PutObject of a staged copy.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from audiences.config import Settings
from audiences.errors import ValidationFailed
from audiences.kit.files import private_dir
from audiences.kit.logs import get_logger
from audiences.services import buckets, senders
from audiences.services.buckets import WriteFailed as WriteFailed
from audiences.services.validation import invalid_field

S3_SCHEME = "s3://"
BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
"""S3's rules for a bucket name (lowercase letters, digits, dots and hyphens; 3 to 63)."""
WRITE_ERRORS = (OSError, ValueError, duckdb.Error)
"""What writing a file can raise: the disk, a value no format takes, DuckDB's Parquet writer."""
STALE_SECONDS = 86_400
"""A staged copy untouched this long was left by a crash (an upload of 5 GiB takes less)."""
KEY_PART = re.compile(r"^[A-Za-z0-9!_.*'()=+,;:@ -]{1,255}$")
"""One ``/``-separated part of an object prefix: S3's safe characters, no control ones."""

log = get_logger("audiences.destinations")


@dataclass(frozen=True)
class Folder:
    """A folder on this machine, under the operator's root."""

    path: Path


@dataclass(frozen=True)
class Bucket:
    """A bucket and a key prefix (empty, or ending in ``/``) on the operator's S3 service."""

    bucket: str
    prefix: str


Target = Folder | Bucket


def resolve(settings: Settings, path: str) -> Target:
    """The target ``path`` names; :class:`ValidationFailed` (422) when the operator allows no
    such target or the path is malformed."""
    if path.startswith(S3_SCHEME):
        return _bucket(settings, path)
    return Folder(_folder(settings, path))


def write(
    settings: Settings,
    path: str,
    *,
    name: str,
    fmt: str,
    rows: Iterable[dict[str, Any]],
    columns: list[str],
) -> str:
    """Write one file ``name.<fmt>`` to the target ``path`` names; its file name or object key.
    :class:`WriteFailed` when it cannot be written (nothing of it is left visible), whatever
    the cause: an unexpected error (reading the members, a library's own) is logged and fails
    the write like any other, so the retry schedule and disabling apply to it too."""
    try:
        return _write(settings, path, name=name, fmt=fmt, rows=rows, columns=columns)
    except WriteFailed:
        raise
    except Exception as error:
        log.exception("writing %s.%s to a file destination failed unexpectedly", name, fmt)
        message = f"an unexpected error ({type(error).__name__}); the server log has the details"
        raise WriteFailed("file_write_failed", message) from None


def _write(
    settings: Settings,
    path: str,
    *,
    name: str,
    fmt: str,
    rows: Iterable[dict[str, Any]],
    columns: list[str],
) -> str:
    try:
        target = resolve(settings, path)
    except ValidationFailed as refused:
        raise WriteFailed(refused.code, refused.detail) from None
    if isinstance(target, Folder):
        try:
            written = senders.write_file(
                target.path, name=name, fmt=fmt, rows=rows, columns=columns
            )
        except WRITE_ERRORS as error:
            raise WriteFailed("file_write_failed", f"cannot write: {error}") from None
        return written.name
    key = f"{target.prefix}{name}.{fmt}"
    staging = private_dir(settings.data_dir / "exports")
    sweep(staging)
    try:
        staged = senders.stage_file(staging, fmt=fmt, rows=rows, columns=columns)
    except WRITE_ERRORS as error:
        raise WriteFailed("file_write_failed", f"cannot stage the file: {error}") from None
    try:
        buckets.put(settings, bucket=target.bucket, key=key, file=staged, fmt=fmt)
    finally:
        staged.unlink(missing_ok=True)
    return key


def sweep(staging: Path) -> int:
    """Remove staged copies a crashed process left (``.tmp-*`` untouched for
    :data:`STALE_SECONDS`); how many. A copy being written or uploaded now is younger."""
    cutoff = time.time() - STALE_SECONDS
    removed = 0
    for entry in os.scandir(staging):
        try:
            if entry.name.startswith(".tmp-") and entry.stat().st_mtime < cutoff:
                Path(entry.path).unlink()
                removed += 1
        except FileNotFoundError:
            continue  # another process swept it first
    return removed


def _bucket(settings: Settings, path: str) -> Bucket:
    bucket, _, prefix = path.removeprefix(S3_SCHEME).partition("/")
    allowed = buckets.allowed(settings, bucket)
    if allowed is None or not buckets.available():
        why = (
            "S3 destinations need the server's `s3` extra (boto3)"
            if allowed is not None
            else "S3 destinations need AUDIENCES_DESTINATION_S3_BUCKETS set by the operator"
        )
        raise invalid_field("path", "s3_destinations_disabled", why)
    if not BUCKET_NAME.match(bucket) or ".." in bucket:
        raise invalid_field("path", "path_not_allowed", f"{bucket!r} is not a valid bucket name")
    parts = [part for part in prefix.split("/") if part]
    if any(part in (".", "..") or not KEY_PART.match(part) for part in parts):
        raise invalid_field(
            "path",
            "path_not_allowed",
            "a prefix is `/`-separated parts of letters, digits and `!_.*'()=+,;:@ -`, "
            "without `.` or `..` parts",
        )
    if not allowed:
        raise invalid_field(
            "path", "bucket_not_allowed", f"the operator does not allow the bucket {bucket!r}"
        )
    return Bucket(bucket, "".join(f"{part}/" for part in parts))


def _folder(settings: Settings, path: str) -> Path:
    """The folder ``path`` names under the operator's root; refused without a root, or when
    the path leaves it."""
    root = settings.destination_file_root
    if root is None:
        raise invalid_field(
            "path",
            "file_destinations_disabled",
            "file destinations need AUDIENCES_DESTINATION_FILE_ROOT set by the operator",
        )
    relative = Path(path)
    if relative.is_absolute() or ".." in relative.parts or "\x00" in path or "://" in path:
        raise invalid_field(
            "path", "path_not_allowed", "a path is relative and stays under the root"
        )
    base = root.resolve()
    folder = (base / relative).resolve()
    if folder != base and base not in folder.parents:
        raise invalid_field(
            "path", "path_not_allowed", "a path is relative and stays under the root"
        )
    return folder
