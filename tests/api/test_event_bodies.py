"""Reading ``POST /v1/events`` bodies: the quick path for batches answers as the models do,
records for the bodies they accept and the same problems for the rest."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from audiences.api import event_bodies
from audiences.engines.base import EventRecord
from audiences.errors import PayloadTooLarge, Unprocessable
from audiences.schemas.events import PLAIN_TIMESTAMP, EventBatch

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
