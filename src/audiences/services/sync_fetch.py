"""Fetching an external audience's file source into a private temporary copy: from its URL
streamed under a size cap and a deadline, through the SSRF guard (each request and redirect
checked, each request pinned to a checked address by ``egress.PinnedClient``),
or from its path under the workspace's sync folder (links resolved first). Whatever goes wrong
raises :class:`~audiences.errors.SyncFailed` with a stable code. Reading the copy is
``services/sync_sources``'s job.
"""

from __future__ import annotations

import functools
import os
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO
from urllib.parse import urljoin

import urllib3

from audiences.errors import InvalidParameter, SyncFailed
from audiences.kit.files import private_dir
from audiences.schemas.syncs import FileSource, PathFileSource, UrlFileSource
from audiences.services import egress, sync_progress
from audiences.services.sync_progress import Tracker
from audiences.services.sync_rules import SourceRules

CHUNK_BYTES = 1 << 16
"""Bytes read from a response or a file at a time."""
MAX_REDIRECTS = 3
"""Redirects a URL source may take, each checked by the guard."""
REDIRECTS = frozenset({301, 302, 303, 307, 308})
HEADERS = {**urllib3.util.make_headers(accept_encoding=True), "user-agent": "audiences-sync/1"}
"""A download may come compressed (gzip or deflate, and brotli or zstd where their modules
are installed); ``stream`` decodes it, and the size cap counts the decoded bytes."""


class _Fetched:
    """A private temporary copy of a file source, removed when the block ends."""

    def __init__(self, source: FileSource, rules: SourceRules, tracker: Tracker) -> None:
        self.source = source
        self.rules = rules
        self.tracker = tracker
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
                    _download(self.source.url, out, self.rules, self.tracker)
                elif isinstance(self.source, PathFileSource):
                    _copy(self.source.path, out, self.rules, self.tracker)
        except BaseException:
            self.path.unlink(missing_ok=True)
            raise
        return self.path

    def __exit__(self, *_: object) -> None:
        self.path.unlink(missing_ok=True)


def fetched(source: FileSource, rules: SourceRules, tracker: Tracker | None = None) -> _Fetched:
    """A private temporary copy of ``source``: the path inside a ``with`` block, removed
    after; ``SyncFailed`` when it cannot be fetched or read. ``tracker`` is told the bytes
    copied as they come."""
    return _Fetched(source, rules, tracker or sync_progress.quiet())


def _download(url: str, out: IO[bytes], rules: SourceRules, tracker: Tracker) -> None:
    """Stream ``url`` into ``out`` (a redirect followed only to a URL the guard allows too)."""
    deadline = time.monotonic() + rules.timeout_seconds
    try:
        with egress.PinnedClient(
            allow_private=rules.allow_private, timeout=rules.timeout_seconds
        ) as client:
            for _ in range(MAX_REDIRECTS + 1):
                _guard(url, rules)
                response = client.request("GET", url, headers=HEADERS)
                try:
                    location = response.headers.get("location")
                    if response.status in REDIRECTS and location:
                        url = _redirected(url, location)
                        continue
                    if response.status != 200:
                        raise SyncFailed(
                            f"the source answered HTTP {response.status}",
                            code="sync_fetch_failed",
                        )
                    size = _check_length(response.headers.get("content-length"), rules.max_bytes)
                    tracker.fetching(size)
                    # What has arrived, as it arrives (``stream`` would wait for a whole
                    # chunk): a source that trickles its bytes still meets the deadline, the
                    # progress and a cancel, which are seen between reads.
                    read = functools.partial(response.read1, CHUNK_BYTES, decode_content=True)
                    with _cut_at(deadline, response) as cut:
                        try:
                            _save(iter(read, b""), out, rules.max_bytes, deadline, tracker)
                        except (urllib3.exceptions.HTTPError, OSError):
                            if not cut.is_set():
                                raise
                        if cut.is_set():  # what was read ends where the connection was cut
                            raise _timed_out(rules)
                    return
                finally:
                    client.done(response)
    except InvalidParameter as refused:  # the address the name resolves to as it is sent
        raise SyncFailed(refused.detail, code=refused.code) from None
    except urllib3.exceptions.HTTPError as error:
        if egress.timed_out(error):
            raise _timed_out(rules) from None
        message = f"the source could not be fetched: {type(error).__name__}"
        raise SyncFailed(message, code="sync_fetch_failed") from None
    raise SyncFailed(f"more than {MAX_REDIRECTS} redirects", code="sync_fetch_failed")


@contextmanager
def _cut_at(deadline: float, response: urllib3.BaseHTTPResponse) -> Iterator[threading.Event]:
    """Shut the answer's connection down at ``deadline`` (set in the event it yields), from a
    timer: a read of a compressed answer goes on reading for as long as the bytes decode to
    nothing (a gzip header's endless name), so no check between reads would ever run."""
    cut = threading.Event()

    def expire() -> None:
        cut.set()
        response.shutdown()

    timer = threading.Timer(max(0.0, deadline - time.monotonic()), expire)
    timer.daemon = True
    timer.start()
    try:
        yield cut
    finally:
        timer.cancel()


def _redirected(url: str, location: str) -> str:
    """Where a redirect's ``Location`` (relative to ``url``) points; one that cannot be read
    as a URL fails the sync."""
    try:
        return urljoin(url, location)
    except ValueError as error:  # "Invalid IPv6 URL": an unclosed bracket
        message = f"the source redirected to a URL that cannot be read: {error}"
        raise SyncFailed(message[:300], code="sync_fetch_failed") from None


def _guard(url: str, rules: SourceRules) -> None:
    """The SSRF guard on each URL before it is requested (scheme, credentials, a literal
    address); the address a name resolves to is checked as each request is sent
    (``egress.PinnedClient``), so a name cannot point elsewhere between check and connect."""
    try:
        egress.checked_url(url, allow_private=rules.allow_private)
    except InvalidParameter as refused:
        raise SyncFailed(refused.detail, code=refused.code) from None


def _check_length(header: str | None, limit: int) -> int | None:
    """The size a ``Content-Length`` announces, refused past ``limit``."""
    if header is None or not header.isdigit():
        return None
    if int(header) > limit:
        raise _too_large(limit)
    return int(header)


def _save(
    chunks: Iterator[bytes], out: IO[bytes], limit: int, deadline: float, tracker: Tracker
) -> None:
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        if time.monotonic() > deadline:
            raise SyncFailed("the source took too long to send the file", code="sync_timeout")
        out.write(chunk)
        tracker.fetched(len(chunk))


def _copy(path: str, out: IO[bytes], rules: SourceRules, tracker: Tracker) -> None:
    """Copy a regular file under the sync folder. Opened without waiting (a named pipe would
    hold the worker until something writes to it), and refused unless it is a regular file:
    a pipe or a device has no end to read to."""
    found = allowed_path(path, rules.root)
    try:
        handle = os.open(found, os.O_RDONLY | os.O_NONBLOCK)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as error:
        message = f"no readable file at {path}: {type(error).__name__}"
        raise SyncFailed(message, code="sync_fetch_failed") from None
    try:
        facts = os.fstat(handle)
        if not stat.S_ISREG(facts.st_mode):  # a directory opens too, on Linux
            message = f"no readable file at {path}: not a regular file"
            raise SyncFailed(message, code="sync_fetch_failed")
        os.set_blocking(handle, True)
        source = open(handle, "rb")  # noqa: SIM115 (it owns the descriptor from here)
    except BaseException:
        os.close(handle)
        raise
    with source:
        tracker.fetching(facts.st_size)
        chunks = iter(lambda: source.read(CHUNK_BYTES), b"")
        _save(chunks, out, rules.max_bytes, float("inf"), tracker)


def allowed_path(path: str, root: Path | None) -> Path:
    """The path resolved (links followed), when it lies under the sync folder (the
    workspace's own, see :meth:`SourceRules.for_workspace`)."""
    if root is None:
        raise SyncFailed(
            "this server reads no source files: AUDIENCES_SYNC_ROOT is not set",
            code="sync_path_not_allowed",
        )
    if not Path(path).is_absolute():
        raise SyncFailed("a source path must be absolute", code="sync_path_not_allowed")
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
