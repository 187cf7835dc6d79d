"""The JSON of a destination's messages, written from columns: a change's fields are the
same for every profile of one revision's entered (or exited) list, so their JSON is made
once and joined with each external id, with no object per change.

A message body reads, compact and UTF-8 as is::

    {"type":"audience.membership_changed","timestamp":"…Z","data":{"audiences":[
      {"id":…,"key":…,"snapshot":false,"changes":[
        {"id":"<external id>","change":"entered","revision":7,"cause":{"kind":"write"}},…]}]}}

Measured on the webhook benchmark (``bench/deliveries``): a message of 1,000 changes made as
one dict per change and encoded by orjson took about 0.35 ms of CPU for the objects and 0.3
ms to encode; joined from the ids it takes a few hundredths of that.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson


def encode(value: Any) -> str:
    """``value`` as compact JSON, UTF-8 as is. orjson (about 20 times faster than the standard
    library on a message), which still encodes what orjson refuses (integers beyond 64 bits
    in attributes)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def body(kind: str, data: str, now: datetime) -> str:
    """A message's body around its ``data`` (JSON already)."""
    stamp = encode(now.isoformat().replace("+00:00", "Z"))
    return f'{{"type":{encode(kind)},"timestamp":{stamp},"data":{data}}}'


@dataclass(frozen=True)
class Group:
    """Changes of one audience that share their kind, revision and cause: the external ids,
    in order, when they were recorded (``at``: a message's ``first_change_at`` is the
    earliest of the groups it holds changes of), and (when the destination asks for them)
    each one's attributes as JSON."""

    ids: list[str]
    kind: str
    revision: int
    cause: dict[str, Any]
    at: datetime
    attributes: list[str] | None = None

    def encoded(self, start: int, end: int) -> list[str]:
        """Changes ``start`` to ``end`` as JSON objects joined by commas, in pieces."""
        fields = (
            f',"change":{encode(self.kind)},"revision":{self.revision},"cause":{encode(self.cause)}'
        )
        ids = self.ids[start:end]
        if self.attributes is not None:
            return [
                ",".join(
                    f'{{"id":{encode(external)}{fields},"attributes":{picked}}}'
                    for external, picked in zip(ids, self.attributes[start:end], strict=True)
                )
            ]
        if _plain(ids):  # no id needs escaping: each is written between quotes as it is
            return ['{"id":"', f'"{fields}}},{{"id":"'.join(ids), f'"{fields}}}']
        return [",".join(f'{{"id":{encode(external)}{fields}}}' for external in ids)]


def _plain(ids: list[str]) -> bool:
    """Whether every id is its own JSON text between quotes (nothing escaped): escaping only
    lengthens, so the ids joined encode to their own length plus the two quotes."""
    joined = "".join(ids)
    try:
        return len(orjson.dumps(joined)) == len(joined.encode()) + 2
    except TypeError:  # a lone surrogate: the slow path encodes it as the standard library does
        return False


@dataclass
class Batch:
    """Messages being filled: each a list of audience sections (JSON), at most ``size``
    changes."""

    size: int
    done: list[tuple[str, int, datetime | None]] = field(default_factory=list)
    """Each message made: its ``data`` (JSON), its changes and its first change's time."""
    sections: list[str] = field(default_factory=list)
    """The JSON of the message being filled, in pieces joined once when it is closed (a
    message is about 100 KB: each concatenation on the way would copy it)."""
    count: int = 0
    first: datetime | None = None

    @property
    def total(self) -> int:
        """Changes in the batch, in every message."""
        return self.count + sum(count for _, count, _ in self.done)

    def add(self, audience_id: str, key: str, snapshot: bool, groups: Sequence[Group]) -> None:
        """Add ``groups`` of one audience (in order), starting a new message when one is full.
        A message holds a section only for the audiences with changes in it, so a message
        filled exactly is closed before the next audience's changes, not given an empty
        section of it. One exception says something: the full list of an audience with no
        members (an empty snapshot) is a section with no changes, where it falls."""
        head = (
            f'{{"id":{encode(audience_id)},"key":{encode(key)},'
            f'"snapshot":{"true" if snapshot else "false"},"changes":['
        )
        total = sum(len(group.ids) for group in groups)
        if total == 0:
            if snapshot:
                self._open(head)
                self.sections.append("]}")
            return
        start = 0
        while start < total:
            if self.count >= self.size:
                self.close()
            take = min(self.size - self.count, total - start)
            self._open(head)
            self.sections += [*_slice(groups, start, start + take), "]}"]
            at = _first_at(groups, start, start + take)
            self.first = at if self.first is None else min(self.first, at)
            self.count += take
            start += take

    def _open(self, head: str) -> None:
        """Start a section of the message being filled."""
        if self.sections:
            self.sections.append(",")
        self.sections.append(head)

    def close(self) -> None:
        """End the message being filled (if it has a section)."""
        if self.sections:
            data = "".join(['{"audiences":[', *self.sections, "]}"])
            self.done.append((data, self.count, self.first))
        self.sections, self.count, self.first = [], 0, None


def _first_at(groups: Sequence[Group], start: int, end: int) -> datetime:
    """The earliest time of the groups that changes ``start`` to ``end`` (``end > start``)
    fall in (a group with no ids, its profiles erased, holds none)."""
    times = []
    offset = 0
    for group in groups:
        if group.ids and offset < end and start < offset + len(group.ids):
            times.append(group.at)
        offset += len(group.ids)
    return min(times)


def _slice(groups: Sequence[Group], start: int, end: int) -> list[str]:
    """Changes ``start`` to ``end`` of the groups taken as one list, as JSON objects (in
    pieces)."""
    parts: list[str] = []
    offset = 0
    for group in groups:
        low, high = max(start - offset, 0), min(end - offset, len(group.ids))
        if low < high:
            if parts:
                parts.append(",")
            parts += group.encoded(low, high)
        offset += len(group.ids)
    return parts
