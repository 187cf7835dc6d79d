"""Reading ``POST /v1/events`` bodies: the quick path for batches answers as the models do,
records for the bodies they accept and the same problems for the rest."""

from __future__ import annotations

import hashlib
import inspect
import re
import typing
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from audiences.api import event_bodies
from audiences.engines.base import EventRecord
from audiences.errors import PayloadTooLarge, Unprocessable
from audiences.schemas.events import (
    PLAIN_BATCH,
    PLAIN_TIMESTAMP,
    BatchedEvent,
    EventBatch,
    EventWrite,
)

RECEIVED = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)

texts = st.one_of(
    st.sampled_from(["u1", "u2", "order", "página", "a" * 200, "a" * 201, "a" * 513, ""]),
    st.text(max_size=8),
)
offsets = st.sampled_from(["Z", "+00:00", "-00:00", "+05:30", "-23:59", "+23:59", "+01:00"])
plain_times = st.builds(
    lambda moment, offset: moment.isoformat() + offset,
    st.datetimes(datetime(1, 1, 1), datetime(9999, 12, 31, 23, 59, 59, 999999)),
    offsets,
)
times = st.one_of(
    plain_times,
    st.from_regex(PLAIN_TIMESTAMP, fullmatch=True),
    st.sampled_from(
        [
            "2026-01-02T03:04:05Z",
            "2026-01-02t03:04:05z",
            "2026-01-02 03:04:05+01:00",
            "2026-01-02T03:04:05.123456789Z",
            "2026-02-30T00:00:00Z",
            "0001-01-01T00:00:00+01:00",
            "2026-01-02T03:04:05",
            "2026-01-02",
            "",
        ]
    ),
    st.integers(0, 2**31),
    st.none(),
)
values = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(), st.text(max_size=5)
)
properties = st.one_of(
    st.dictionaries(st.text(max_size=5), values | st.dictionaries(st.text(max_size=3), values)),
    st.lists(values, max_size=2),
    values,
)
FIELDS = {
    "profile_id": texts,
    "event": texts,
    "timestamp": times,
    "properties": properties,
    "event_id": st.none() | texts,
    "extra": values,
}
an_event = st.fixed_dictionaries(
    {"profile_id": texts, "event": texts},
    optional={name: FIELDS[name] for name in ("timestamp", "properties", "event_id", "extra")},
)
# Half the events made valid, so that whole batches pass often enough to compare records.
valid_event = st.fixed_dictionaries(
    {"profile_id": st.sampled_from(["u1", "u2"]), "event": st.sampled_from(["order", "view"])},
    optional={
        "timestamp": plain_times | st.none(),
        "properties": st.dictionaries(st.sampled_from(["a", "b"]), values),
        "event_id": st.none() | st.sampled_from(["e1", "e2"]),
    },
)


def _by_models(data: Any) -> list[EventRecord] | list[Any]:
    """The records the models make of ``data``, or the problems the route says they find."""
    try:
        batch = EventBatch.model_validate(data)
    except ValidationError as exc:
        return [
            (loc, "timestamp_invalid" if loc and loc[-1] == "timestamp" else e["type"])
            for e in exc.errors()
            for loc in [tuple(e["loc"])]
        ][:100]
    return [
        EventRecord(e.profile_id, e.event, e.timestamp or RECEIVED, e.properties, e.event_id)
        for e in batch.events
    ]


def _read(data: Any) -> list[EventRecord] | list[Any]:
    raw = orjson.dumps(data)
    try:
        body = event_bodies.read(raw, orjson.loads(raw), max_events=10_000, received=RECEIVED)
    except Unprocessable as refused:
        assert refused.code == "events_invalid"
        return [(e.location[1:], e.code) for e in refused.errors]
    assert not body.single
    return body.records


@settings(max_examples=400, deadline=None)
@given(st.lists(valid_event | an_event, max_size=6), st.booleans())
def test_a_batch_reads_as_the_models_read_it(events: list[Any], extra: bool) -> None:
    data: dict[str, Any] = {"events": events}
    if extra:
        data["more"] = 1
    expected = _by_models(orjson.loads(orjson.dumps(data)))
    found = _read(data)
    assert found == expected
    for mine, theirs in zip(found, expected, strict=True):
        if isinstance(mine, EventRecord):
            assert mine.timestamp.utcoffset() == theirs.timestamp.utcoffset()


@settings(max_examples=300, deadline=None)
@given(plain_times | st.from_regex(PLAIN_TIMESTAMP, fullmatch=True))
def test_a_plain_timestamp_reads_as_the_models_read_it(text: str) -> None:
    data = {"events": [{"profile_id": "u1", "event": "order", "timestamp": text}]}
    assert _read(data) == _by_models(data)
    assert _read({"events": [{"profile_id": "u1", "event": "e", "timestamp": text}] * 2})


@pytest.mark.parametrize(
    "text",
    [
        "0001-01-01T00:00:00+14:00",  # before the year 1 in UTC: refused
        "9999-12-31T23:59:59-05:00",  # after 9999 in UTC: refused
        "0001-01-02T00:00:00+14:00",
        "9999-12-31T00:00:00Z",
    ],
)
def test_a_time_at_the_calendar_s_edges_reads_as_the_models_read_it(text: str) -> None:
    data = {"events": [{"profile_id": "u1", "event": "e", "timestamp": text}] * 2}
    assert _read(data) == _by_models(data)


def test_the_common_times_come_out_in_utc_itself() -> None:
    data = {"events": [{"profile_id": "u1", "event": "e", "timestamp": "2026-01-02T03:04:05Z"}]}
    [record] = _read(data)
    assert record.timestamp == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert record.timestamp.tzinfo is UTC


def test_a_nul_character_is_refused_by_the_models_with_its_place() -> None:
    data = {"events": [{"profile_id": "u\x00", "event": "e"}]}
    with pytest.raises(Unprocessable) as refused:
        event_bodies.read(orjson.dumps(data), data, max_events=10, received=RECEIVED)
    assert refused.value.code == "events_invalid"


def test_a_batch_over_the_limit_is_too_large_before_it_is_read() -> None:
    data = {"events": [{"profile_id": "u1", "event": "e"}] * 3}
    with pytest.raises(PayloadTooLarge):
        event_bodies.read(orjson.dumps(data), data, max_events=2, received=RECEIVED)


UPDATE_PLAIN_BATCH = (
    "schemas.events.PLAIN_BATCH is a hand-kept copy of EventBatch/EventWrite for the quick"
    " path of POST /v1/events (api.event_bodies): the models changed, so make PLAIN_BATCH"
    " accept exactly what they now accept (or nothing more), then record the models' new"
    " fingerprint here."
)


def test_the_quick_path_reads_the_fields_of_the_models() -> None:
    """PLAIN_BATCH gives each event the models' fields, with the models' defaults."""
    least = {"profile_id": "u1", "event": "order"}
    [plain] = PLAIN_BATCH.validate_python({"events": [least]})["events"]
    assert set(PLAIN_BATCH.validate_python({"events": [least]})) == set(EventBatch.model_fields)
    assert set(plain) == set(EventWrite.model_fields), UPDATE_PLAIN_BATCH
    assert plain == EventWrite.model_validate(least).model_dump(), UPDATE_PLAIN_BATCH


def _functions(model: type[BaseModel]) -> list[Callable[..., Any]]:
    """The validators of a model: its decorated ones and those annotated on its fields."""
    decorators = model.__pydantic_decorators__
    found: list[Callable[..., Any]] = [
        decorator.func
        for kind in (decorators.validators, decorators.field_validators)
        for decorator in kind.values()
    ]
    found += [decorator.func for decorator in decorators.model_validators.values()]
    pending: list[Any] = [field.annotation for field in model.model_fields.values()]
    while pending:
        annotation = pending.pop()
        pending.extend(typing.get_args(annotation))
        pending.extend(getattr(annotation, "__metadata__", ()))
        if callable(getattr(annotation, "func", None)):
            found.append(annotation.func)
    return found


def _fingerprint(model: type[BaseModel]) -> dict[str, Any]:
    """What a model accepts: its config, each field's type, constraints and default, and each
    validator by name and a hash of its source (so an edited validator shows too)."""

    def shown(value: Any) -> str:
        return re.sub(r" at 0x[0-9a-f]+", "", repr(value))

    def validator(func: Callable[..., Any]) -> str:
        func = getattr(func, "__func__", func)
        source = hashlib.sha256(inspect.getsource(func).encode()).hexdigest()[:12]
        return f"{func.__module__}.{func.__qualname__} {source}"

    return {
        "config": dict(model.model_config),
        "fields": {
            name: [
                shown(f.annotation),
                shown(f.metadata),
                shown(f.default),
                shown(f.default_factory),
            ]
            for name, f in model.model_fields.items()
        },
        "validators": sorted(set(map(validator, _functions(model)))),
    }


def test_the_models_the_quick_path_mirrors_are_unchanged() -> None:
    """A new constraint or validator on the models must be mirrored in PLAIN_BATCH, which
    would otherwise accept what the models refuse: this fails on any such change."""
    found = {
        model.__name__: _fingerprint(model) for model in (EventWrite, BatchedEvent, EventBatch)
    }
    assert found == RECORDED_MODELS, UPDATE_PLAIN_BATCH


_PATTERN = "[_PydanticGeneralMetadata(pattern='^[^\\\\x00-\\\\x1f]{1,%d}$')]"
_EVENT_FIELDS = {
    "event": ["<class 'str'>", _PATTERN % 200, "PydanticUndefined", "None"],
    "event_id": ["str | None", _PATTERN % 512, "None", "None"],
    "profile_id": ["<class 'str'>", _PATTERN % 512, "PydanticUndefined", "None"],
    "properties": ["dict[str, typing.Any]", "[]", "PydanticUndefined", "<class 'dict'>"],
    "timestamp": [
        "typing.Optional[typing.Annotated[datetime.datetime, BeforeValidator(func=<function"
        " _rfc3339>, json_schema_input_type=PydanticUndefined), AfterValidator(func=<function"
        " _in_range>)]]",
        "[]",
        "None",
        "None",
    ],
}
_RFC3339 = "audiences.schemas.common._rfc3339 3a4f6dd036d8"
_IN_RANGE = "audiences.schemas.common._in_range 3415ac38fecb"
"""The time's instant within years 1-9999 in UTC: the quick path leaves times of those years
to the models."""
_NO_NUL = "audiences.schemas.common.InputModel._no_nul d8c79a007555"
RECORDED_MODELS: dict[str, Any] = {
    "EventWrite": {
        "config": {"extra": "forbid"},
        "fields": _EVENT_FIELDS,
        "validators": [_NO_NUL, _IN_RANGE, _RFC3339],
    },
    "BatchedEvent": {
        "config": {"extra": "forbid"},
        "fields": _EVENT_FIELDS,
        "validators": [
            _IN_RANGE,
            _RFC3339,
            "audiences.schemas.events.BatchedEvent._no_nul 063addba441e",
        ],
    },
    "EventBatch": {
        "config": {"extra": "forbid"},
        "fields": {
            "events": [
                "list[audiences.schemas.events.BatchedEvent]",
                "[MinLen(min_length=1), MaxLen(max_length=10000)]",
                "PydanticUndefined",
                "None",
            ]
        },
        "validators": [_NO_NUL],
    },
}
"""The models :data:`PLAIN_BATCH` mirrors, as :func:`_fingerprint` shows them."""
