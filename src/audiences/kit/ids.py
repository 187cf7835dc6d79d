"""Resource identifiers: random, URL-safe, sortable by creation time within a millisecond."""

from __future__ import annotations

import os
import time
import uuid


def new_id() -> str:
    """A UUIDv7-shaped string: time-ordered, so ids sort roughly by creation.

    >>> len(new_id()), new_id() != new_id()
    (36, True)
    """
    millis = time.time_ns() // 1_000_000
    raw = bytearray(millis.to_bytes(6, "big") + os.urandom(10))
    raw[6] = (raw[6] & 0x0F) | 0x70
    raw[8] = (raw[8] & 0x3F) | 0x80
    return str(uuid.UUID(bytes=bytes(raw)))
