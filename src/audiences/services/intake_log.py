"""The intake log's records: framing, and reading a segment back.

A segment is a file of records, each written by one ``os.write``::

    b"AIW1" | payload length (u32, little endian) | crc32 of the payload (u32) | payload
    payload = meta length (u32) | meta (JSON) | raw request body

The body stays where it was written: the job of a logged write names its segment, offset and
length (:class:`BodyLocation`), its handler reads it from there, and the intake drops a segment
once every job it holds has ended.

A process killed in the middle of a write leaves a record shorter than its header says, or (were
the file ever extended without its data) one whose checksum does not match: either way the tail
from that record on is *torn*, and :func:`read` stops there. The checksum is a crc32 over
the whole payload (~40 µs for a 130 KB body), so a torn tail is found without trusting any of its
bytes.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

MAGIC = b"AIW1"
HEADER = struct.Struct("<4sII")
META_LENGTH = struct.Struct("<I")


def directory(data_dir: Path) -> Path:
    """Where the intake log of ``data_dir`` lives."""
    return Path(data_dir) / "writes" / "intake"


@dataclass(frozen=True)
class BodyLocation:
    """Where a logged write lies: segment number, offset and length of its whole record. Kept
    in the write's job (:meth:`as_payload`) so its handler reads the request body from the log
    (checksum checked again) instead of from a file of its own."""

    segment: int
    offset: int
    length: int

    def as_payload(self) -> dict[str, int]:
        """The location as the job's payload keeps it."""
        return {"segment": self.segment, "offset": self.offset, "length": self.length}

    @classmethod
    def from_payload(cls, value: Any) -> BodyLocation | None:
        """The location kept by :meth:`as_payload`; None for anything else."""
        try:
            return cls(int(value["segment"]), int(value["offset"]), int(value["length"]))
        except (KeyError, TypeError, ValueError):
            return None


def read_body(data_dir: Path, location: BodyLocation, job_id: str) -> bytes | None:
    """The request body of job ``job_id``'s record at ``location`` in ``data_dir``'s log; None
    once its segment is gone, or if the record there is not whole or another job's (only a
    damaged disk does that)."""
    path = directory(data_dir) / segment_name(location.segment)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        data = os.pread(fd, location.length, location.offset)
    finally:
        os.close(fd)
    records, covered = decode(data)
    whole = len(records) == 1 and covered == location.length
    return records[0].body if whole and records[0].job_id == job_id else None


@dataclass(frozen=True)
class Record:
    """One accepted JSON membership write, as the intake logs it; ``location`` is where its
    body lies once it is in a segment (not part of the record's bytes)."""

    job_id: str
    workspace_id: str
    audience_id: str
    action: str
    actor: str
    created_at: datetime
    max_attempts: int
    body: bytes
    location: BodyLocation | None = field(default=None, compare=False)


def encode(record: Record) -> bytes:
    """The record framed: header, meta, body."""
    meta = orjson.dumps(
        {
            "job_id": record.job_id,
            "workspace_id": record.workspace_id,
            "audience_id": record.audience_id,
            "action": record.action,
            "actor": record.actor,
            "created_at": record.created_at.isoformat(),
            "max_attempts": record.max_attempts,
        }
    )
    prefix = META_LENGTH.pack(len(meta)) + meta
    crc = zlib.crc32(record.body, zlib.crc32(prefix))
    header = HEADER.pack(MAGIC, len(prefix) + len(record.body), crc)
    return b"".join((header, prefix, record.body))


def decode(data: bytes, segment: int = 0) -> tuple[list[Record], int]:
    """The complete records at the start of ``data`` (segment number ``segment``) and how many
    bytes they cover; anything after that (a torn tail) is left out."""
    records: list[Record] = []
    offset = 0
    view = memoryview(data)
    while len(data) - offset >= HEADER.size:
        magic, length, crc = HEADER.unpack_from(data, offset)
        start = offset + HEADER.size
        end = start + length
        if magic != MAGIC or end > len(data) or length < META_LENGTH.size:
            break
        payload = view[start:end]
        if zlib.crc32(payload) != crc:
            break
        (meta_length,) = META_LENGTH.unpack_from(payload)
        body_start = META_LENGTH.size + meta_length
        if body_start > length:
            break
        try:
            meta = orjson.loads(payload[META_LENGTH.size : body_start])
            records.append(
                Record(
                    job_id=meta["job_id"],
                    workspace_id=meta["workspace_id"],
                    audience_id=meta["audience_id"],
                    action=meta["action"],
                    actor=meta["actor"],
                    created_at=datetime.fromisoformat(meta["created_at"]),
                    max_attempts=meta["max_attempts"],
                    body=bytes(payload[body_start:]),
                    location=BodyLocation(segment, offset, end - offset),
                )
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            break
        offset = end
    return records, offset


def read(path: Path) -> tuple[list[Record], bool]:
    """A segment's complete records, and whether it ended in a torn tail."""
    data = path.read_bytes()
    records, covered = decode(data, int(path.stem))
    return records, covered != len(data)


def segment_name(number: int) -> str:
    """``000042.log``: names sort in the order segments were started."""
    return f"{number:06d}.log"


def segments(directory: Path) -> list[tuple[int, Path]]:
    """The segments in ``directory``, oldest first."""
    found = []
    for path in directory.glob("*.log"):
        if path.stem.isdigit():
            found.append((int(path.stem), path))
    return sorted(found)
