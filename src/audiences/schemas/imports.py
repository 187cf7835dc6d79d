"""Membership writes and file imports of static audiences: request bodies and their OpenAPI."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field, StringConstraints

from audiences.schemas.common import InputModel

MAX_IDS = 10_000
"""Most ids one membership write carries."""

ID_PATTERN = r"^[^\x00-\x1f]+$"
ExternalId = Annotated[str, StringConstraints(min_length=1, max_length=512, pattern=ID_PATTERN)]


class ImportMode(StrEnum):
    """What a write does to the audience: add the ids, remove them, or make them the members."""

    ADD = "add"
    REMOVE = "remove"
    REPLACE = "replace"


class MemberWrite(InputModel):
    """Ids to add to, remove from, or make the members of a static audience."""

    action: ImportMode
    ids: list[ExternalId] = Field(
        max_length=MAX_IDS, description="External ids (profiles are created when unknown)."
    )


MEMBER_WRITE_SCHEMA: dict[str, Any] = {
    "title": "MemberWrite",
    "type": "object",
    "additionalProperties": False,
    "required": ["action", "ids"],
    "properties": {
        "action": {"type": "string", "enum": [mode.value for mode in ImportMode]},
        "ids": {
            "type": "array",
            "maxItems": MAX_IDS,
            "items": {"type": "string", "minLength": 1, "maxLength": 512, "pattern": ID_PATTERN},
            "description": "External ids (profiles are created when unknown).",
        },
    },
}
MEMBER_WRITE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": MEMBER_WRITE_SCHEMA}},
    }
}
"""The JSON body, declared by hand: it is parsed with orjson as one list, not by FastAPI."""

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
