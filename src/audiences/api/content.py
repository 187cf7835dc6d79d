"""Request bodies: content-type checks (415) and parsing PATCH documents."""

from __future__ import annotations

import json
from typing import Any

import orjson
from fastapi import Depends, Request

from audiences.config import Settings
from audiences.errors import BadRequest, UnsupportedMediaType
from audiences.services.patching import Patch, PatchFormat, PatchLimits

JSON = "application/json"


def media_type(request: Request) -> str:
    """The request's content type without parameters, lower-cased ('' when absent)."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _require_json(request: Request) -> None:
    if media_type(request) != JSON:
        raise UnsupportedMediaType(
            f"send the body as {JSON}, not {media_type(request) or 'no content type'}",
            code="unsupported_media_type",
        )


RequireJson = Depends(_require_json)

_JSON_PATCH_SCHEMA: dict[str, Any] = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["op", "path"],
        "properties": {
            "op": {"type": "string", "enum": ["add", "remove", "replace", "move", "copy", "test"]},
            "path": {"type": "string"},
            "from": {"type": "string"},
            "value": {},
        },
    },
}

PATCH_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            PatchFormat.JSON_PATCH.value: {"schema": _JSON_PATCH_SCHEMA},
            PatchFormat.MERGE_PATCH.value: {"schema": {"type": "object"}},
            JSON: {"schema": _JSON_PATCH_SCHEMA},  # an array: read as a JSON Patch
        },
    }
}


async def read_patch(request: Request) -> Patch:
    """The PATCH body as a JSON Patch or merge patch, by its content type, with the limits its
    result must keep (those of a PUT's body).

    A JSON array sent as plain ``application/json`` can only be a JSON Patch (a merge patch is
    an object), so it is read as one; any other plain JSON body is ambiguous and refused (415).
    """
    kind = media_type(request)
    try:
        patch_format: PatchFormat | None = None if kind == JSON else PatchFormat(kind)
    except ValueError:
        raise _unsupported() from None
    raw = await request.body()
    try:
        orjson.loads(raw)  # what is JSON: no NaN, infinity, lone surrogate or byte order mark
    except orjson.JSONDecodeError as exc:
        raise BadRequest("the body is not valid JSON", code="malformed_json") from exc
    # The same document again, with integers of any size kept exact (a model then refuses
    # what a JSON column cannot hold); orjson turns one beyond 64 bits into a float.
    document = json.loads(raw)
    if patch_format is None:
        if not isinstance(document, list):
            raise _unsupported(f"; as {JSON}, only a JSON Patch (an array of operations)")
        patch_format = PatchFormat.JSON_PATCH
    settings: Settings = request.app.state.settings
    limits = PatchLimits(settings.max_body_bytes, settings.max_patch_operations)
    return Patch(patch_format, document, limits)


def _unsupported(more: str = "") -> UnsupportedMediaType:
    return UnsupportedMediaType(
        f"PATCH takes {PatchFormat.JSON_PATCH.value} or {PatchFormat.MERGE_PATCH.value}{more}",
        code="unsupported_media_type",
    )


PatchBody = Depends(read_patch)
