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

from audiences.engines.base import Profile, ProfileRecord, UpsertResult
from audiences.engines.coerce import COERCERS, TypeMismatchError, dump_json, valid_unicode
from audiences.errors import ErrorDetail
from audiences.schemas.attributes import AttributeType
from audiences.schemas.memberships import MAX_ID_LENGTH


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


def plan_writes(
    records: Sequence[ProfileRecord],
    schema: Mapping[str, AttributeType],
    *,
    strict: bool = False,
    types: Mapping[AttributeType, Callable[[object], Any]] = COERCERS,
) -> WritePlan:
    """Check every record against the schema and fold records for the same id, in order.

    ``strict``: a record naming an undeclared attribute (with a value) is refused. ``types``
    checks each type's values (an engine with narrower types than :data:`COERCERS` passes
    its own, so that an unstorable value fails its record alone)."""
    coercers = {name: types[kind] for name, kind in schema.items()}
    by_id: dict[str, Write] = {}
    refused: dict[int, UpsertResult] = {}
    for position, (external_id, attributes) in enumerate(records):
        values, extra, problems = check_record(
            external_id, attributes, schema, coercers, strict=strict
        )
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
    *,
    strict: bool = False,
) -> tuple[dict[str, Any], dict[str, Any], tuple[ErrorDetail, ...]]:
    """Split a record into typed declared values and undeclared extras, collecting every problem.

    The record is first put in its canonical form (:func:`canonical`: nested objects become
    dotted names), so both write forms of a nested attribute are stored alike. ``coercers`` is
    each declared attribute's :data:`COERCERS` entry, when the caller checks many records
    against one schema. ``strict``: an undeclared attribute with a value is a problem."""
    if coercers is None:
        coercers = {name: COERCERS[kind] for name, kind in schema.items()}
    problems = check_external_id(external_id)
    if not isinstance(attributes, Mapping):
        problems.append(_problem("attributes_invalid", "attributes must be an object", ()))
        return {}, {}, tuple(problems)
    flat, repeated = canonical(attributes, schema)
    problems.extend(repeated)
    values: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for name, value in flat.items():
        if not name.isascii() and not valid_unicode(name):
            # Located by the name's escaped spelling: the name itself cannot be sent back.
            shown = name.encode("utf-8", "backslashreplace").decode()
            message = f"{shown}: an attribute name must be valid Unicode (no lone surrogate)"
            problems.append(_problem("attribute_name_invalid", message, (shown,)))
            continue
        convert = coercers.get(name)
        try:
            if convert is not None:
                values[name] = None if value is None else convert(value)
            elif strict and value is not None:
                message = f"{name}: not a declared attribute, and this workspace is strict"
                problems.append(_problem("attribute_undeclared", message, (name,)))
            else:
                extra[name] = None if value is None else _json_value(name, value)
        except TypeMismatchError as mismatch:
            problems.append(_problem("attribute_type_mismatch", f"{name}: {mismatch}", (name,)))
    return values, extra, tuple(problems)


def canonical(
    attributes: Mapping[str, Any], schema: Mapping[str, AttributeType]
) -> tuple[dict[str, Any], list[ErrorDetail]]:
    """The record with nested objects flattened to dotted names, and the names given twice.

    ``{"addr": {"city": "Paris"}}`` and ``{"addr.city": "Paris"}`` are one write: storage,
    SQL and Python predicates all see ``addr.city``. An object stays whole under a declared
    name (a ``json`` attribute keeps it; any other type refuses it); an empty object sets
    nothing. A name reached both ways (nested and dotted) is a problem, not a silent choice.
    """
    # Records are parsed JSON: a nested object is a dict. ``in`` over the values' types runs
    # in C; a check per value in Python cost a tenth of a 10,000-record upsert.
    if dict not in map(type, attributes.values()):
        return dict(attributes), []  # the common case: already flat
    flat: dict[str, Any] = {}
    repeated: list[ErrorDetail] = []
    _flatten(attributes, "", schema, flat, repeated)
    return flat, repeated


def _flatten(
    attributes: Mapping[str, Any],
    prefix: str,
    schema: Mapping[str, AttributeType],
    flat: dict[str, Any],
    repeated: list[ErrorDetail],
) -> None:
    for key, value in attributes.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and name not in schema:
            _flatten(value, f"{name}.", schema, flat, repeated)
        elif name in flat:
            message = f"{name}: given twice (as a nested object and as a dotted name)"
            repeated.append(_problem("attribute_repeated", message, (name,)))
        else:
            flat[name] = value


def merge_extra(stored: str | None, patch: Mapping[str, Any]) -> str | None:
    """The ``extra`` JSON after a top-level merge: None values remove keys; empty becomes NULL.

    What is stored is read in canonical form (extras written before nested objects were
    flattened may hold them), so a dotted name in ``patch`` replaces its nested value."""
    if not patch:
        return stored
    merged: dict[str, Any] = canonical(orjson.loads(stored), {})[0] if stored else {}
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


def check_external_id(external_id: object) -> list[ErrorDetail]:
    """The problems of an external id (none, or one); a new list, which callers add to."""
    if (
        isinstance(external_id, str)
        and 0 < len(external_id) <= MAX_ID_LENGTH
        and valid_unicode(external_id)
    ):
        return []
    message = f"external_id must be a string of 1 to {MAX_ID_LENGTH} characters"
    return [ErrorDetail("external_id_invalid", message, ("external_id",))]


def _problem(code: str, message: str, location: tuple[str, ...]) -> ErrorDetail:
    return ErrorDetail(code, message, ("attributes", *location))
