"""PATCH semantics shared by every resource: JSON Patch (RFC 6902) and JSON Merge Patch (RFC 7386).

Both edit the resource's full JSON representation; only paths under writable fields may change,
while ``test`` may check any path (``/version`` included). The result is validated again as a
whole write, so a patch can never produce a state a PUT could not.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import jsonpatch
import jsonpointer

from audiences.errors import Conflict, ErrorDetail, Unprocessable

MUTATING_OPS = {"add", "remove", "replace", "move", "copy"}


class PatchFormat(StrEnum):
    """The two patch media types PATCH accepts."""

    JSON_PATCH = "application/json-patch+json"
    MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True)
class Patch:
    """A parsed PATCH body and its format."""

    format: PatchFormat
    document: Any


def apply_patch(current: dict[str, Any], patch: Patch, writable: frozenset[str]) -> dict[str, Any]:
    """The writable fields of ``current`` after ``patch``; a clear error if it cannot apply."""
    if patch.format is PatchFormat.MERGE_PATCH:
        return _merge_patch(current, patch.document, writable)
    return _json_patch(current, patch.document, writable)


def _json_patch(current: dict[str, Any], ops: Any, writable: frozenset[str]) -> dict[str, Any]:
    if not isinstance(ops, list):
        raise _malformed("a JSON Patch document is an array of operations")
    for index, op in enumerate(ops):
        _check_op(index, op, writable)
    try:
        patched = jsonpatch.JsonPatch(ops).apply(copy.deepcopy(current))
    except jsonpatch.JsonPatchTestFailed as exc:
        raise Conflict(f"a test operation failed: {exc}", code="patch_test_failed") from exc
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
        raise Unprocessable(f"the patch cannot be applied: {exc}", code="patch_failed") from exc
    return {key: value for key, value in patched.items() if key in writable}


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
