"""Uploads streamed to disk: a raw body or the ``file`` part of multipart/form-data.

Chunks go to the file as they arrive and are hashed on the way, so memory stays flat whatever
the size; the upload limit is counted by :class:`~audiences.api.middleware.BodyLimitMiddleware`
while the body streams in, and a refused or broken upload leaves no file behind.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from fastapi import Request
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

from audiences.api.content import media_type
from audiences.errors import BadRequest, Unprocessable
from audiences.kit.files import private_dir
from audiences.services.import_formats import MEDIA_TYPES, ImportFormat

MULTIPART = "multipart/form-data"
EXTENSIONS = {
    ".csv": ImportFormat.CSV,
    ".tsv": ImportFormat.TSV,
    ".ndjson": ImportFormat.NDJSON,
    ".jsonl": ImportFormat.NDJSON,
    ".txt": ImportFormat.TEXT,
}


@dataclass(frozen=True)
class Received:
    """A stored upload: its SHA-256, size, and the format its content type or name names."""

    digest: str
    size: int
    named_format: ImportFormat | None


async def receive(request: Request, destination: Path) -> Received:
    """Stream the request's file to ``destination``; deleted again if anything goes wrong."""
    private_dir(destination.parent)
    try:
        with destination.open("wb") as out:
            if media_type(request) == MULTIPART:
                return await _multipart(request, out)
            return await _raw(request, out)
    except BaseException:
        destination.unlink(missing_ok=True)
        raise


def format_of(content_type: str, filename: str | None) -> ImportFormat | None:
    """The format a content type or a file name (``.csv``, ``.tsv.gz``, …) names, if any."""
    named = MEDIA_TYPES.get(content_type)
    if named is None and filename:
        stem = filename.lower().removesuffix(".gz")
        named = next((f for ext, f in EXTENSIONS.items() if stem.endswith(ext)), None)
    return named


async def _raw(request: Request, out: IO[bytes]) -> Received:
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.stream():
        out.write(chunk)
        digest.update(chunk)
        size += len(chunk)
    return Received(digest.hexdigest(), size, format_of(media_type(request), None))


class _FilePart:
    """Callbacks for python-multipart: the ``file`` part's bytes go to disk, the rest is
    skipped."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.digest = hashlib.sha256()
        self.size = 0
        self.header_name = b""
        self.header_value = b""
        self.headers: dict[bytes, bytes] = {}
        self.in_file = False
        self.files = 0
        self.content_type = ""
        self.filename: str | None = None

    def on_part_begin(self) -> None:
        self.headers = {}

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.headers[self.header_name.strip().lower()] = self.header_value.strip()
        self.header_name = self.header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.headers.get(b"content-disposition", b""))
        self.in_file = options.get(b"name") == b"file" and self.files == 0
        if self.in_file:
            self.files += 1
            raw_type = self.headers.get(b"content-type", b"").decode("latin-1")
            self.content_type = raw_type.split(";")[0].strip().lower()
            name = options.get(b"filename")
            self.filename = name.decode("utf-8", "replace") if name else None

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.in_file:
            chunk = data[start:end]
            self.out.write(chunk)
            self.digest.update(chunk)
            self.size += len(chunk)

    def on_part_end(self) -> None:
        self.in_file = False


async def _multipart(request: Request, out: IO[bytes]) -> Received:
    _, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if not boundary:
        raise BadRequest("multipart/form-data without a boundary", code="malformed_multipart")
    part = _FilePart(out)
    callbacks = {name: getattr(part, name) for name in dir(_FilePart) if name.startswith("on_")}
    parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except Exception as exc:
        if type(exc).__module__.startswith("python_multipart"):
            raise BadRequest(f"broken multipart body: {exc}", code="malformed_multipart") from None
        raise
    # python-multipart's finalize() does not check that the closing boundary came: a body cut
    # short would pass as complete, its last part truncated (issue #11).
    if parser.state != MultipartState.END:
        raise BadRequest(
            "the multipart body ends before its closing boundary", code="malformed_multipart"
        )
    if part.files == 0:
        raise Unprocessable("the form has no `file` part", code="import_file_invalid")
    return Received(part.digest.hexdigest(), part.size, format_of(part.content_type, part.filename))
