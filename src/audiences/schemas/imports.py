"""File imports of static audiences: the modes and the upload's OpenAPI."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ImportMode(StrEnum):
    """What a write does to the audience: add the ids, remove them, or make them the members."""

    ADD = "add"
    REMOVE = "remove"
    REPLACE = "replace"


_TEXT = {"schema": {"type": "string"}}
_BINARY = {"schema": {"type": "string", "format": "binary"}}
UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": (
            "The file: CSV, TSV, NDJSON or plain text (one id per line), gzipped or not "
            "(`Content-Encoding: gzip` or gzip's magic bytes), as the raw body or as the "
            "`file` part of a form."
        ),
        "content": {
            "text/csv": _TEXT,
            "text/tab-separated-values": _TEXT,
            "application/x-ndjson": _TEXT,
            "text/plain": _TEXT,
            "application/gzip": _BINARY,
            "application/octet-stream": _BINARY,
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            },
        },
    }
}
"""The upload, streamed to disk by the route (never parsed by FastAPI)."""
