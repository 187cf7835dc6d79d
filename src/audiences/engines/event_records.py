"""What one event record must be, shared by both checks of a batch (by columns in
:mod:`audiences.engines.event_columns`, by records in :mod:`audiences.engines.event_writes`):
the form of its name and id, its time in UTC, and the checked record handed to engines."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, NamedTuple

from audiences.engines.coerce import valid_unicode
from audiences.kit.clock import as_utc
from audiences.schemas.memberships import MAX_ID_LENGTH

MAX_EVENT_NAME_LENGTH = 200
"""The longest event name, in characters."""

EVENT_NAME = re.compile(rf"[^\x00-\x1f]{{1,{MAX_EVENT_NAME_LENGTH}}}")
EVENT_ID = re.compile(rf"[^\x00-\x1f]{{1,{MAX_ID_LENGTH}}}")
"""What the wire contract allows (``schemas.events``), checked again for every other caller."""


class CheckedEvent(NamedTuple):
    """A record that passed: its position in the batch and its values, typed."""

    position: int
    external_id: str
    name: str
    timestamp: datetime
    event_id: str | None
    values: dict[str, Any]


def utc(timestamp: object) -> datetime | None:
    """The time in UTC; None for anything but an aware datetime UTC can hold."""
    if type(timestamp) is datetime and timestamp.tzinfo is UTC:
        return timestamp
    if not isinstance(timestamp, datetime) or timestamp.tzinfo is None:
        return None
    try:
        return as_utc(timestamp)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is a year before UTC can say
        return None


def valid_text(pattern: re.Pattern[str], value: object) -> bool:
    """Whether ``value`` is a string ``pattern`` matches whole that an engine can store."""
    return isinstance(value, str) and pattern.fullmatch(value) is not None and valid_unicode(value)
