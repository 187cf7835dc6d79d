"""A batch of profile writes made ready for any engine: checked, typed, merged by external id.

Checking happens here, before the database sees anything, so that one bad value fails one record
with an ``ErrorDetail`` while the rest of the batch is written.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from audiences.engines.base import MAX_EXTERNAL_ID_LENGTH, Profile, ProfileRecord, UpsertResult
from audiences.engines.coerce import COERCERS, TypeMismatchError, dump_json, valid_unicode
from audiences.errors import ErrorDetail
from audiences.schemas.attributes import AttributeType


@dataclass
class Write:
    """Everything a batch says about one external id: declared values (None clears) and extras."""

    external_id: str
    positions: list[int]
    values: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    pid: int = 0
    created: bool = False


@dataclass
class WritePlan:
    """The writes of a batch, one per external id in first-seen order, and the refused records."""

    writes: list[Write]
    refused: dict[int, UpsertResult]
    size: int

    def results(self, written: Mapping[int, Profile] | None = None) -> list[UpsertResult]:
        """One result per input record, in input order, with the profile each write left
        (from ``written``, by pid) when the engine returned it."""
        written = written or {}
        out: list[UpsertResult | None] = [None] * self.size
        for write in self.writes:
            profile = written.get(write.pid)
            for n, position in enumerate(write.positions):
                created = write.created and n == 0
                out[position] = UpsertResult(write.external_id, write.pid, created, profile=profile)
        for position, result in self.refused.items():
            out[position] = result
        return [result for result in out if result is not None]


def plan_writes(records: Sequence[ProfileRecord], schema: Mapping[str, AttributeType]) -> WritePlan:
    """Check every record against the schema and fold records for the same id, in order."""
    coercers = {name: COERCERS[kind] for name, kind in schema.items()}
    by_id: dict[str, Write] = {}
    refused: dict[int, UpsertResult] = {}
    for position, (external_id, attributes) in enumerate(records):
        values, extra, problems = check_record(external_id, attributes, schema, coercers)
        if problems:
            refused[position] = UpsertResult(str(external_id), None, errors=problems)
            continue
        write = by_id.get(external_id)
        if write is None:
            by_id[external_id] = Write(external_id, [position], values, extra)
        else:
            write.positions.append(position)
            write.values.update(values)
            write.extra.update(extra)
    return WritePlan(list(by_id.values()), refused, len(records))


def check_record(
    external_id: object,
    attributes: object,
    schema: Mapping[str, AttributeType],
    coercers: Mapping[str, Callable[[object], Any]] | None = None,
) -> tuple[dict[str, Any], dict[str, Any], tuple[ErrorDetail, ...]]:
    """Split a record into typed declared values and undeclared extras, collecting every problem.

    ``coercers`` is each declared attribute's :data:`COERCERS` entry, when the caller checks
    many records against one schema."""
    if coercers is None:
        coercers = {name: COERCERS[kind] for name, kind in schema.items()}
    problems = _check_id(external_id)
    if not isinstance(attributes, Mapping):
        problems.append(_problem("attributes_invalid", "attributes must be an object", ()))
        return {}, {}, tuple(problems)
    values: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for name, value in attributes.items():
        if not valid_unicode(name):
            # Located by the name's escaped spelling: the name itself cannot be sent back.
            shown = name.encode("utf-8", "backslashreplace").decode()
            message = f"{shown}: an attribute name must be valid Unicode (no lone surrogate)"
            problems.append(_problem("attribute_name_invalid", message, (shown,)))
            continue
        convert = coercers.get(name)
        try:
            if convert is not None:
                values[name] = None if value is None else convert(value)
            else:
                extra[name] = None if value is None else _json_value(name, value)
        except TypeMismatchError as mismatch:
            problems.append(_problem("attribute_type_mismatch", f"{name}: {mismatch}", (name,)))
    return values, extra, tuple(problems)


def merge_extra(stored: str | None, patch: Mapping[str, Any]) -> str | None:
    """The ``extra`` JSON after a top-level merge: None values remove keys; empty becomes NULL."""
    if not patch:
        return stored
    merged: dict[str, Any] = orjson.loads(stored) if stored else {}
    for name, value in patch.items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = value
    return dump_json(merged) if merged else None


def merge_row(
    write: Write, old: Sequence[Any] | None, names: Sequence[str], now: datetime
) -> tuple[Any, ...]:
    """The row ``write`` leaves over the stored row ``old`` (None for a new profile), in the
    engine's row order: pid, external_id, extra, updated_at, then the declared attributes in
    ``names`` order. Declared values the write names replace the old ones (None clears);
    the others are kept as stored; extras are merged by :func:`merge_extra`."""
    if old is None:
        return (
            write.pid,
            write.external_id,
            merge_extra(None, write.extra),
            now,
            *(write.values.get(name) for name in names),
        )
    given = write.values
    kept = zip(names, old[4:], strict=True)
    return (
        write.pid,
        write.external_id,
        merge_extra(old[2], write.extra),
        now,
        *(given.get(name, stored) for name, stored in kept),
    )


def _json_value(name: str, value: object) -> object:
    if not isinstance(name, str):
        raise TypeMismatchError("attribute names are strings")
    dump_json(value)
    return value


def _check_id(external_id: object) -> list[ErrorDetail]:  # a new list: callers add to it
    if (
        isinstance(external_id, str)
        and 0 < len(external_id) <= MAX_EXTERNAL_ID_LENGTH
        and valid_unicode(external_id)
    ):
        return []
    message = f"external_id must be a string of 1 to {MAX_EXTERNAL_ID_LENGTH} characters"
    return [ErrorDetail("external_id_invalid", message, ("external_id",))]


def _problem(code: str, message: str, location: tuple[str, ...]) -> ErrorDetail:
    return ErrorDetail(code, message, ("attributes", *location))
