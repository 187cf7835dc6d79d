"""Opaque pagination cursors: a JSON payload in URL-safe base64, checked on the way back in."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any


class CursorError(ValueError):
    """The cursor is not one this service issued."""


def encode_cursor(payload: dict[str, Any]) -> str:
    """Pack a JSON-ready payload into an opaque token.

    >>> decode_cursor(encode_cursor({"v": [1, "a"]}))
    {'v': [1, 'a']}
    """
    raw = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str) -> dict[str, Any]:
    """Unpack a token from :func:`encode_cursor`; raise :class:`CursorError` on anything else.

    >>> decode_cursor("garbage!")
    Traceback (most recent call last):
    ...
    audiences.kit.cursors.CursorError: malformed cursor
    """
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        payload = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise CursorError("malformed cursor") from exc
    if not isinstance(payload, dict):
        raise CursorError("malformed cursor")
    return payload
