"""PATCH semantics shared by every resource: JSON Patch (RFC 6902) and JSON Merge Patch (RFC 7386).

Both edit the resource's full JSON representation; only paths under writable fields may change,
while ``test`` may check any path (``/version`` included). The result is validated again as a
whole write, so a patch can never produce a state a PUT could not: that includes the size of
a body, which a patch of ``copy`` operations could otherwise multiply (issue #11).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import jsonpatch
import jsonpointer
import orjson

from audiences.errors import Conflict, ErrorDetail, PayloadTooLarge, Unprocessable

MUTATING_OPS = {"add", "remove", "replace", "move", "copy"}


class PatchFormat(StrEnum):
    """The two patch media types PATCH accepts."""

    JSON_PATCH = "application/json-patch+json"
    MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True)
class PatchLimits:
    """What a patch may do: its result is at most ``max_bytes`` as compact JSON (the body limit
    of the PUT it stands for), and a JSON Patch holds at most ``max_operations``."""

    max_bytes: int
    max_operations: int


@dataclass(frozen=True)
class Patch:
    """A parsed PATCH body, its format, and the limits its result must keep."""

    format: PatchFormat
    document: Any
    limits: PatchLimits


def apply_patch(current: dict[str, Any], patch: Patch, writable: frozenset[str]) -> dict[str, Any]:
    """The writable fields of ``current`` after ``patch``; a clear error if it cannot apply or
    its result is larger than a body may be."""
    if patch.format is PatchFormat.MERGE_PATCH:
        result = _merge_patch(current, patch.document, writable)
    else:
        result = _json_patch(current, patch.document, writable, patch.limits)
    _check_size(json_size(result), patch.limits)
    return result


def json_size(value: Any) -> int:
    """The length of ``value`` as compact JSON, in bytes.

    >>> json_size({"a": [1, "é"]})
    14
    """
    try:
        return len(orjson.dumps(value))
    except orjson.JSONEncodeError:  # beyond 64 bits or 255 levels: validation refuses it later
        pass
    try:
        return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    except RecursionError:
        raise Unprocessable(
            "the patched resource nests deeper than JSON can be stored",
            code="validation_failed",
        ) from None


def _json_patch(
    current: dict[str, Any], ops: Any, writable: frozenset[str], limits: PatchLimits
) -> dict[str, Any]:
    if not isinstance(ops, list):
        raise _malformed("a JSON Patch document is an array of operations")
    if len(ops) > limits.max_operations:
        raise Unprocessable(
            f"a JSON Patch may hold at most {limits.max_operations} operations, not {len(ops)}",
            code="patch_too_many_operations",
            extra={"limit": limits.max_operations},
        )
    for index, op in enumerate(ops):
        _check_op(index, op, writable)
    try:
        patched = _apply_ops(copy.deepcopy(current), ops, writable, limits)
    except jsonpatch.JsonPatchTestFailed as exc:
        raise Conflict(f"a test operation failed: {exc}", code="patch_test_failed") from exc
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
        raise Unprocessable(f"the patch cannot be applied: {exc}", code="patch_failed") from exc
    return _writable(patched, writable)


def _writable(document: dict[str, Any], writable: frozenset[str]) -> dict[str, Any]:
    return {key: value for key, value in document.items() if key in writable}


def _apply_ops(
    document: dict[str, Any], ops: list[Any], writable: frozenset[str], limits: PatchLimits
) -> dict[str, Any]:
    """Apply ``ops`` one by one, stopping as soon as the document outgrows the limit.

    What is measured is the writable fields, which a PUT would send (no other field changes).
    Only ``copy`` can grow them beyond the patch's own size, each time by the size of what it
    copies, so ``estimate`` (the size so far plus every copy) bounds the true size without
    serialising after every operation; when the estimate passes the limit, they are measured.
    """
    estimate = json_size(_writable(document, writable))
    for op in ops:
        if op["op"] == "copy" and isinstance(op.get("from"), str):
            estimate += json_size(jsonpointer.resolve_pointer(document, op["from"]))
        document = jsonpatch.JsonPatch([op]).apply(document, in_place=True)
        if estimate > limits.max_bytes:
            estimate = json_size(_writable(document, writable))
            _check_size(estimate, limits)
    return document


def _check_size(size: int, limits: PatchLimits) -> None:
    if size > limits.max_bytes:
        raise PayloadTooLarge(
            f"the patched resource would be over the body limit of {limits.max_bytes} bytes",
            code="patch_result_too_large",
            extra={"limit_bytes": limits.max_bytes},
        )


def _check_op(index: int, op: Any, writable: frozenset[str]) -> None:
    if not isinstance(op, dict) or not isinstance(op.get("op"), str):
        raise _malformed(f"operation {index} is not an object with an 'op'", index)
    if not isinstance(op.get("path"), str):
        raise _malformed(f"operation {index} has no string 'path'", index)
    if op["op"] not in MUTATING_OPS | {"test"}:
        raise _malformed(f"operation {index} has unknown op {op['op']!r}", index)
    paths = [op["path"]] if op["op"] != "move" else [op["path"], op.get("from")]
    if op["op"] in MUTATING_OPS:
        for path in paths:
            if not isinstance(path, str) or _top_field(path) not in writable:
                raise Unprocessable(
                    f"operation {index} may not change {path!r}; writable: "
                    + ", ".join(sorted(writable)),
                    code="patch_forbidden_path",
                    errors=[
                        ErrorDetail("patch_forbidden_path", f"{path!r} is read-only", (index,))
                    ],
                )


def _top_field(path: str) -> str:
    parts = path.split("/")
    return parts[1].replace("~1", "/").replace("~0", "~") if len(parts) > 1 else ""


def _merge_patch(current: dict[str, Any], doc: Any, writable: frozenset[str]) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise _malformed("a merge patch document is a JSON object")
    forbidden = sorted(set(doc) - writable)
    if forbidden:
        raise Unprocessable(
            f"a merge patch may not change {', '.join(forbidden)}",
            code="patch_forbidden_path",
            errors=[
                ErrorDetail("patch_forbidden_path", f"{k!r} is read-only", (k,)) for k in forbidden
            ],
        )
    base = {key: value for key, value in current.items() if key in writable}
    merged = merge(base, doc)
    assert isinstance(merged, dict)
    return merged


def merge(target: Any, patch: Any) -> Any:
    """RFC 7386 section 2: objects merge recursively, null deletes, anything else replaces.

    >>> merge({"a": 1, "b": {"c": 2}}, {"b": {"c": None, "d": 3}})
    {'a': 1, 'b': {'d': 3}}
    """
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge(result.get(key), value)
    return result


def _malformed(message: str, index: int | None = None) -> Unprocessable:
    location: tuple[str | int, ...] = () if index is None else (index,)
    return Unprocessable(
        message, code="patch_malformed", errors=[ErrorDetail("patch_malformed", message, location)]
    )
