"""A batch of events checked: the fast path passes exactly the records the full check passes,
with the same values, and the results of a batch come back in its order."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from audiences.engines import event_writes
from audiences.engines.base import EventRecord, EventResult
from audiences.engines.event_writes import CheckedEvent, batch_results, check_events
from audiences.errors import ErrorDetail
from audiences.schemas.attributes import AttributeType as T

SCHEMA = {"amount": T.FLOAT, "sku": T.STRING, "qty": T.INTEGER, "tags": T.STRING_LIST}
MOMENT = datetime(2024, 5, 1, 12, tzinfo=UTC)


def typed(value: Any) -> Any:
    """``value`` with the type of each part beside it: ``==`` alone holds 1 == 1.0 == True,
    and a check that passes an int as a FLOAT's value, or a bool as an INTEGER's, is wrong."""
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # CheckedEvent
        return (type(value).__name__, *map(typed, value))
    if isinstance(value, dict):
        return ("dict", {key: typed(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return (type(value).__name__, [typed(item) for item in value])
    if isinstance(value, datetime):
        return ("datetime", value.isoformat(), value.tzinfo is UTC)
    if isinstance(value, float) and math.isnan(value):
        return ("float", "nan")
    return (type(value).__name__, value)


texts = st.sampled_from(["u1", "u2", "", "x" * 600, "a\x00b", "\ud800", "order", "view"])
values = st.one_of(
    st.none(),
    st.integers(-5, 5),
    st.floats(allow_nan=True),
    st.sampled_from(["a", "", "\ud800", "1.5"]),
    st.lists(st.sampled_from(["a", "b"]), max_size=2),
    st.fixed_dictionaries({"nested": st.integers(0, 2)}),
)
times = st.one_of(
    st.just(MOMENT),
    st.just(MOMENT.replace(tzinfo=None)),
    st.just(MOMENT.astimezone(timezone(timedelta(hours=2)))),
    st.just(datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1)))),
    st.just("2024-05-01"),
)
records = st.builds(
    EventRecord,
    texts,
    texts,
    times,
    st.one_of(
        st.dictionaries(st.sampled_from([*SCHEMA, "other", "x.y"]), values, max_size=3),
        st.just("not a mapping"),
    ),
    st.one_of(st.none(), texts),
)


def _one_by_one(batch: list[EventRecord]) -> tuple[list[CheckedEvent], dict[int, Any]]:
    """The full check alone, record by record (what the fast path must agree with)."""
    coercers = event_writes.event_coercers(SCHEMA)
    passed, refused = [], {}
    for position, record in enumerate(batch):
        when, found, problems = event_writes._check(record, SCHEMA, coercers)
        if problems:
            refused[position] = problems
        else:
            passed.append(
                CheckedEvent(
                    position, record.external_id, record.name, when, record.event_id, found
                )
            )
    return passed, refused


@settings(max_examples=300, deadline=None)
@given(st.lists(records, max_size=12))
def test_the_fast_path_agrees_with_the_full_check(batch: list[EventRecord]) -> None:
    passed, refused = check_events(batch, SCHEMA)
    expected_passed, expected_refused = _one_by_one(batch)
    assert typed(passed) == typed(expected_passed)
    assert {n: result.errors for n, result in refused.items()} == expected_refused


COLUMN_SCHEMA = {**SCHEMA, "ok": T.BOOLEAN, "meta": T.JSON, "at": T.TIMESTAMP}
fitting = st.fixed_dictionaries(
    {},
    optional={
        "amount": st.one_of(st.floats(), st.integers(-(2**70), 2**70), st.none()),
        "sku": st.one_of(st.sampled_from(["a", "", "é", "\ud800"]), st.none(), st.just(1)),
        "qty": st.one_of(st.integers(-(2**64), 2**64), st.sampled_from([1.0, 1.5]), st.none()),
        "tags": st.one_of(st.lists(st.sampled_from(["a", "b"]), max_size=2), st.none()),
        "ok": st.one_of(st.booleans(), st.none(), st.just(1)),
        "meta": st.one_of(st.fixed_dictionaries({"n": st.integers(0, 2)}), st.none()),
        "at": st.sampled_from(["2024-05-01T00:00:00+02:00", "2024-05-01", "no"]),
    },
)
mostly_fitting = st.builds(
    EventRecord,
    st.sampled_from(["u1", "u2"]),
    st.sampled_from(["order", "view"]),
    st.sampled_from([MOMENT, MOMENT.astimezone(timezone(timedelta(hours=2)))]),
    fitting | st.just(MappingProxyType({})),
    st.one_of(st.none(), st.uuids().map(str), st.just("")),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(mostly_fitting, max_size=8))
def test_a_batch_checked_by_columns_is_checked_as_record_by_record(
    batch: list[EventRecord],
) -> None:
    passed, refused = check_events(batch, COLUMN_SCHEMA)
    coercers = event_writes.event_coercers(COLUMN_SCHEMA)
    one_by_one = [event_writes._check(record, COLUMN_SCHEMA, coercers) for record in batch]
    assert [n for n, (_, _, problems) in enumerate(one_by_one) if problems] == sorted(refused)
    assert typed(passed) == typed(
        [
            CheckedEvent(n, record.external_id, record.name, when, record.event_id, found)
            for n, (record, (when, found, problems)) in enumerate(
                zip(batch, one_by_one, strict=True)
            )
            if not problems
        ]
    )
    assert all(type(event.values) is dict for event in passed)
    assert all(event.timestamp.tzinfo is UTC for event in passed)


CLEAN = {
    "amount": st.floats(-1e6, 1e6),
    "sku": st.sampled_from(["a", "", "é", "b c"]),
    "qty": st.integers(-(2**63), 2**63 - 1),
    "tags": st.lists(st.sampled_from(["a", "b"]), max_size=2),
    "ok": st.booleans(),
    "meta": st.fixed_dictionaries({"n": st.integers(0, 2)}),
    "at": st.sampled_from(["2024-05-01T00:00:00+02:00", "2024-05-01T12:00:00Z"]),
}
"""Values each column's check passes as they are (``COLUMN_SCHEMA``'s types)."""
ODD = {
    "amount": st.sampled_from([1, 0, -(2**63), 2**64, 10**400, True, "1.5", 1e308, -1e308]),
    "sku": st.sampled_from(["a\x00b", "\ud800", "x\udfff", 1, True, ["a"]]),
    "qty": st.sampled_from(
        [2**63, -(2**63) - 1, 2**64, -(2**64), 10**400, True, False, 1.0, 1.5, "7", 2.0**70]
    ),
    "tags": st.sampled_from([["a", 1], ["\ud800"], ["a\x00"], "a", ("a",), [None]]),
    "ok": st.sampled_from([1, 0, 1.0, "true", "False", "yes"]),
    "meta": st.sampled_from([{"n": 2**64}, {"n": float("nan")}, [1, "a"], "text", 1.5]),
    "at": st.sampled_from(
        [
            "9999-12-31T23:00:00-02:00",
            "0001-01-01T00:00:00+01:00",
            "2024-05-01",
            "2024-05-01T00:00:00",
            "no",
            MOMENT,
            MOMENT.replace(tzinfo=None),
            1714521600,
        ]
    ),
}
"""Values a column's check must not pass as they are: out of range, of a neighbouring type
(an int under FLOAT, which must become a float; a bool under INTEGER), not storable text."""
clean_records = st.builds(
    EventRecord,
    st.sampled_from(["u1", "u2"]),
    st.sampled_from(["order", "view"]),
    st.just(MOMENT),
    st.fixed_dictionaries({}, optional=CLEAN),
    st.one_of(st.none(), st.uuids().map(str)),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(clean_records, min_size=1, max_size=6), st.data())
def test_one_odd_value_in_a_clean_batch_is_judged_as_record_by_record(
    batch: list[EventRecord], data: st.DataObject
) -> None:
    """A clean batch with one odd value: the column-by-column check must neither pass what
    the record-by-record check refuses nor keep a value of another type than it makes."""
    column = data.draw(st.sampled_from(sorted(ODD)))
    n = data.draw(st.integers(0, len(batch) - 1))
    odd = data.draw(ODD[column])
    batch[n] = batch[n]._replace(properties={**batch[n].properties, column: odd})
    passed, refused = check_events(batch, COLUMN_SCHEMA)
    coercers = event_writes.event_coercers(COLUMN_SCHEMA)
    one_by_one = [event_writes._check(record, COLUMN_SCHEMA, coercers) for record in batch]
    assert sorted(refused) == [k for k, (_, _, problems) in enumerate(one_by_one) if problems]
    expected = [
        CheckedEvent(k, record.external_id, record.name, when, record.event_id, found)
        for k, (record, (when, found, problems)) in enumerate(zip(batch, one_by_one, strict=True))
        if not problems
    ]
    assert typed(passed) == typed(expected)


def test_results_follow_the_batch_order() -> None:
    def checked(position: int, external_id: str) -> CheckedEvent:
        return CheckedEvent(position, external_id, "e", MOMENT, None, {})

    refusal = EventResult(
        "bad", None, errors=(ErrorDetail("event_name_invalid", "no", ("event",)),)
    )
    pids = {"a": 1, "b": 2}
    fresh, duplicate = [checked(0, "a"), checked(3, "b")], [checked(2, "a")]
    found = batch_results(4, {1: refusal}, fresh, duplicate, pids)
    assert found == [
        EventResult("a", 1),
        refusal,
        EventResult("a", 1, duplicate=True),
        EventResult("b", 2),
    ]
    assert batch_results(2, {}, [checked(0, "a"), checked(1, "b")], [], pids) == [
        EventResult("a", 1),
        EventResult("b", 2),
    ]


def test_the_field_order_the_fast_paths_read_by_position_is_pinned() -> None:
    """The ingest path reads these named tuples by position, in C, to skip a Python call per
    event: ``tuple.__new__`` builds them from columns (``api.event_bodies``,
    ``engines.event_columns``, ``event_writes.batch_results``), ``itemgetter(n)`` and
    ``record[n]`` read them (``services.events``, ``api.event_bodies``), ``zip(*records)``
    and unpacking split them (``event_columns``, ``event_writes``). Reordering, adding or
    removing a field silently swaps values there."""
    moved = "a field moved: update every positional read named in this test's docstring"
    assert EventRecord._fields == (
        "external_id",
        "name",
        "timestamp",
        "properties",
        "event_id",
    ), moved
    assert EventResult._fields == ("external_id", "pid", "duplicate", "errors"), moved
    assert CheckedEvent._fields == (
        "position",
        "external_id",
        "name",
        "timestamp",
        "event_id",
        "values",
    ), moved
