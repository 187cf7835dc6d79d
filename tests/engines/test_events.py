"""Events on every engine: types, duplicates, paging, erasure, retention, reopening."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyroaring import BitMap

from audiences.engines.base import EventPosition, EventRecord, EventSlice, ProfileEngine
from audiences.errors import Conflict, ValidationFailed
from audiences.schemas.attributes import AttributeType
from audiences.schemas.events import Event
from tests.engines.conftest import WS
from tests.engines.kinds import Store

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PROPERTIES: dict[str, AttributeType] = {f"p_{kind.value}": kind for kind in AttributeType}


@pytest.fixture
def events_engine(engine: ProfileEngine) -> ProfileEngine:
    """The engine of ``conftest``, its workspace declaring one event property of each type."""
    engine.ensure_event_properties(WS, PROPERTIES)
    return engine


def _at(minutes: int, **fields: object) -> EventRecord:
    values = {"external_id": "u1", "name": "order", "properties": {}, **fields}
    return EventRecord(timestamp=T0 + timedelta(minutes=minutes), **values)  # type: ignore[arg-type]


def test_the_engine_still_satisfies_the_protocol(events_engine: ProfileEngine) -> None:
    assert isinstance(events_engine, ProfileEngine)
    assert events_engine.event_properties(WS) == PROPERTIES


def test_every_property_type_round_trips_and_times_are_utc(events_engine: ProfileEngine) -> None:
    properties = {
        "p_string": "a",
        "p_integer": 3,
        "p_float": 1.5,
        "p_boolean": True,
        "p_timestamp": "2026-01-01T10:00:00+02:00",
        "p_date": "2026-01-02",
        "p_string_list": ["x", "y"],
        "p_number_list": [1, 2.5],
        "p_json": {"deep": [1, None]},
    }
    when = datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    [result] = events_engine.write_events(WS, [EventRecord("u1", "order", when, properties)])
    assert result.ok and result.pid is not None and not result.duplicate
    [event] = events_engine.events_of(WS, [result.pid])[result.pid]
    assert event.timestamp == when and event.timestamp.tzinfo is UTC
    assert event.properties == {
        **properties,
        "p_timestamp": datetime(2026, 1, 1, 8, tzinfo=UTC),
        "p_date": date(2026, 1, 2),
        "p_integer": 3,
        "p_float": 1.5,
        "p_number_list": [1.0, 2.5],
    }


def test_a_record_that_contradicts_its_types_fails_alone(events_engine: ProfileEngine) -> None:
    results = events_engine.write_events(
        WS,
        [
            _at(0, external_id="bad", properties={"p_integer": "many"}),
            _at(0, external_id="bad", properties={"undeclared": 1}),
            _at(0, external_id="bad", properties={"Not A Name": 1}),
            _at(0, external_id="bad", name=""),
            _at(0, external_id="bad", event_id=""),
            EventRecord("bad", "order", datetime(2026, 1, 1)),  # naive: no offset
            _at(0, external_id="fine", properties={"p_integer": "7", "p_string": None}),
        ],
    )
    codes = [[e.code for e in r.errors] for r in results]
    assert codes == [
        ["property_type_mismatch"],
        ["property_undeclared"],
        ["property_name_invalid"],
        ["event_name_invalid"],
        ["event_id_invalid"],
        ["timestamp_invalid"],
        [],
    ]
    assert events_engine.pids_for(WS, ["bad", "fine"])[0] is None, "no profile for refusals"
    pid = results[-1].pid
    assert pid is not None
    assert events_engine.events_of(WS, [pid])[pid][0].properties == {"p_integer": 7}


def test_event_ids_are_written_once_per_workspace(events_engine: ProfileEngine) -> None:
    first = events_engine.write_events(
        WS, [_at(0, event_id="a"), _at(1, event_id="a"), _at(2, event_id="b"), _at(3)]
    )
    assert [r.duplicate for r in first] == [False, True, False, False]
    again = events_engine.write_events(WS, [_at(5, event_id="b"), _at(6, event_id="c")])
    assert [r.duplicate for r in again] == [True, False]
    assert again[0].pid == first[0].pid, "a duplicate still names its profile"
    # A refused first copy does not make the second a duplicate.
    retried = events_engine.write_events(
        WS,
        [_at(7, event_id="d", properties={"p_integer": "x"}), _at(7, event_id="d")],
    )
    assert [(r.ok, r.duplicate) for r in retried] == [(False, False), (True, False)]
    pid = first[0].pid
    assert pid is not None
    assert len(events_engine.events_of(WS, [pid])[pid]) == 5
    other = events_engine.write_events("other", [_at(0, event_id="a")])
    assert not other[0].duplicate, "ids are per workspace"


def test_a_copy_within_the_dedupe_window_is_a_duplicate_on_every_engine(
    events_engine: ProfileEngine,
) -> None:
    """The window's start is one microsecond before the first copy was received: still in."""
    [first] = events_engine.write_events(WS, [_at(0, event_id="w")], received_at=T0)
    for since in (T0 - timedelta(days=7), T0):
        [again] = events_engine.write_events(
            WS, [_at(1, event_id="w")], received_at=T0 + timedelta(days=6), dedupe_since=since
        )
        assert again.ok and again.duplicate and again.pid == first.pid
    pid = first.pid or 0
    assert len(events_engine.events_of(WS, [pid])[pid]) == 1


def test_a_copy_after_the_dedupe_window_is_stored_except_on_postgres(store: Store) -> None:
    """DuckDB and ClickHouse look ids up only among the events received within the window;
    PostgreSQL's unique index remembers every stored id."""
    engine = store.open()
    engine.ensure_event_properties(WS, PROPERTIES)
    [first] = engine.write_events(WS, [_at(0, event_id="old")], received_at=T0)
    later = T0 + timedelta(days=8)
    since = later - timedelta(days=7)
    [copy, fresh] = engine.write_events(
        WS,
        [_at(1, event_id="old"), _at(2, event_id="new")],
        received_at=later,
        dedupe_since=since,
    )
    assert copy.ok and copy.duplicate is (store.kind == "postgres")
    assert fresh.ok and not fresh.duplicate
    [again] = engine.write_events(
        WS, [_at(3, event_id="old")], received_at=later, dedupe_since=since
    )
    assert again.duplicate, "the copy stored after the window starts a window of its own"
    pid = first.pid or 0
    assert len(engine.events_of(WS, [pid])[pid]) == 2 + (store.kind != "postgres")


def test_ids_known_new_are_not_looked_up_but_the_rest_are(store: Store) -> None:
    engine = store.open()
    engine.ensure_event_properties(WS, PROPERTIES)
    [stored] = engine.write_events(WS, [_at(0, event_id="kept")])
    results = engine.write_events(
        WS,
        [_at(1, event_id="kept"), _at(2, event_id="x"), _at(3, event_id="x"), _at(4)],
        known_new=frozenset({"x"}),
    )
    assert [r.duplicate for r in results] == [True, False, True, False], (
        "ids not vouched for are looked up; a batch's own copies are duplicates"
    )
    # The engine takes the caller's word: a stored id vouched for is not looked up. Only
    # PostgreSQL's unique index catches it, and its retry looks every id up.
    [vouched] = engine.write_events(WS, [_at(5, event_id="kept")], known_new=frozenset({"kept"}))
    assert vouched.ok and vouched.duplicate is (store.kind == "postgres")
    pid = stored.pid or 0
    assert len(engine.events_of(WS, [pid])[pid]) == 3 + (store.kind != "postgres")


def test_events_of_are_oldest_first_and_slices_cut(events_engine: ProfileEngine) -> None:
    odd = "it's"  # a name that needs quoting wherever it is written into SQL
    written = [_at(5), _at(1, name="view"), _at(3, name=odd), _at(4), _at(2, external_id="u2")]
    events_engine.write_events(WS, written)
    pids = events_engine.pids_for(WS, ["u1", "u2", "nobody"])
    found = events_engine.events_of(WS, [pid or 0 for pid in pids])
    assert set(found) == {pids[0], pids[1]}
    assert [e.timestamp.minute for e in found[pids[0] or 0]] == [1, 3, 4, 5]

    def minutes(*slices: EventSlice) -> dict[int, list[int]]:
        read = events_engine.events_of(WS, [pid or 0 for pid in pids], slices=slices)
        return {pid: [e.timestamp.minute for e in events] for pid, events in read.items()}

    u1, u2 = pids[0] or 0, pids[1] or 0
    at_3 = T0 + timedelta(minutes=3)
    assert minutes(EventSlice(None, at_3)) == {u1: [3, 4, 5]}
    assert minutes(EventSlice(("view", odd), None)) == {u1: [1, 3]}
    assert minutes(EventSlice(("order",), T0 + timedelta(minutes=5))) == {u1: [5]}
    assert minutes(EventSlice(("view",), None), EventSlice(("order",), at_3)) == {u1: [1, 4, 5]}
    assert minutes(EventSlice(None, None)) == {u1: [1, 3, 4, 5], u2: [2]}
    assert minutes(EventSlice(("none",), None)) == minutes() == {}
    assert events_engine.events_of("never-written", [1]) == {}


EXAMPLES = itertools.count()


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    minutes=st.lists(st.integers(0, 5), min_size=0, max_size=30),
    limit=st.integers(1, 7),
    names=st.sampled_from([(), ("order",), ("view", "order")]),
)
def test_paging_gives_every_event_once_newest_first(
    engine: ProfileEngine,
    minutes: list[int],
    limit: int,
    names: tuple[str, ...],
) -> None:
    """Invariant: the pages, concatenated, are the profile's (chosen) events, each exactly once,
    newest first, however many share a time."""
    ws = f"paging{next(EXAMPLES)}"  # a fresh workspace per example
    engine.ensure_event_properties(ws, {"n": AttributeType.INTEGER})
    records = [
        _at(m, name="order" if n % 2 else "view", properties={"n": n})
        for n, m in enumerate(minutes)
    ]
    engine.write_events(ws, records)
    pid = engine.pids_for(ws, ["u1"])[0] or 1
    seen: list[Event] = []
    after: EventPosition | None = None
    while True:
        page = engine.profile_events(ws, pid, limit=limit, after=after, names=names)
        assert len(page.events) <= limit
        seen += [stored.event for stored in page.events]
        if page.next is None:
            break
        after = page.next
    wanted = [r for r in records if not names or r.name in names]
    assert sorted(e.properties["n"] for e in seen) == sorted(r.properties["n"] for r in wanted)
    times = [e.timestamp for e in seen]
    assert times == sorted(times, reverse=True)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    batch=st.lists(
        st.tuples(st.sampled_from(["a", "b"]), st.one_of(st.none(), st.sampled_from("xyz"))),
        max_size=12,
    )
)
def test_writing_a_batch_twice_stores_each_event_once(
    engine: ProfileEngine, batch: list[tuple[str, str | None]]
) -> None:
    """Invariant: with ids, the second write of a batch stores nothing; each id is stored once."""
    ws = f"idempotent{next(EXAMPLES)}"
    records = [_at(n, external_id=who, event_id=eid) for n, (who, eid) in enumerate(batch)]
    engine.write_events(ws, records)
    engine.write_events(ws, records)
    pids = [pid for pid in engine.pids_for(ws, ["a", "b"]) if pid is not None]
    stored = [e for events in engine.events_of(ws, pids).values() for e in events]
    with_ids = {eid for _, eid in batch if eid is not None}
    without = sum(1 for _, eid in batch if eid is None)
    assert len(stored) == len(with_ids) + 2 * without


def test_deleting_a_profile_deletes_its_events(events_engine: ProfileEngine) -> None:
    events_engine.write_events(WS, [_at(0), _at(1, external_id="u2")])
    pid = events_engine.delete_profile(WS, "u1")
    assert pid is not None
    assert events_engine.events_of(WS, [pid]) == {}
    assert events_engine.profile_events(WS, pid, limit=10).events == []
    [again] = events_engine.write_events(WS, [_at(2)])
    assert again.pid != pid, "a new profile, a new pid"
    assert len(events_engine.events_of(WS, [again.pid or 0])[again.pid or 0]) == 1


def test_retention_drops_older_events_and_counts_them(events_engine: ProfileEngine) -> None:
    events_engine.write_events(WS, [_at(m) for m in range(10)])
    assert events_engine.drop_events_before(WS, T0 + timedelta(minutes=4)) == 4
    assert events_engine.drop_events_before(WS, T0 + timedelta(minutes=4)) == 0
    pid = events_engine.pids_for(WS, ["u1"])[0] or 0
    assert [e.timestamp.minute for e in events_engine.events_of(WS, [pid])[pid]] == list(
        range(4, 10)
    )
    assert events_engine.drop_events_before("never-written", T0) == 0


def test_property_types_never_change_and_builtins_are_reserved(
    events_engine: ProfileEngine,
) -> None:
    with pytest.raises(Conflict):
        events_engine.ensure_event_properties(WS, {"p_string": AttributeType.INTEGER})
    with pytest.raises(ValidationFailed):
        events_engine.ensure_event_properties(WS, {"timestamp": AttributeType.STRING})
    assert events_engine.event_properties(WS) == PROPERTIES


def test_events_survive_a_reopen(store: Store, events_engine: ProfileEngine) -> None:
    events_engine.write_events(WS, [_at(0, properties={"p_float": 2})])
    events_engine.close()
    reopened = store.open()
    assert reopened.event_properties(WS) == PROPERTIES
    pid = reopened.pids_for(WS, ["u1"])[0] or 0
    assert reopened.events_of(WS, [pid])[pid][0].properties == {"p_float": 2.0}
    assert reopened.pids_with_events_between(WS, [(T0, T0)]) == BitMap([pid])


def test_pids_with_events_between_reads_every_range(events_engine: ProfileEngine) -> None:
    events_engine.write_events(
        WS, [_at(0), _at(10, external_id="u2"), _at(20, external_id="u3"), _at(30)]
    )
    pids = events_engine.pids_for(WS, ["u1", "u2", "u3"])
    minutes = [(T0 + timedelta(minutes=a), T0 + timedelta(minutes=b)) for a, b in [(5, 10)]]
    assert events_engine.pids_with_events_between(WS, minutes) == BitMap([pids[1] or 0])
    both = [(T0 + timedelta(minutes=15), T0 + timedelta(minutes=20)), (T0, T0)]
    assert events_engine.pids_with_events_between(WS, both) == BitMap([pids[0] or 0, pids[2] or 0])
    assert events_engine.pids_with_events_between(WS, []) == BitMap()
    assert events_engine.pids_with_events_between("never-written", both) == BitMap()


@pytest.mark.parametrize("text", ["9999-12-31T23:00:00-02:00", "0001-01-01T00:00:00+01:00"])
def test_a_property_time_utc_cannot_hold_fails_its_record(
    events_engine: ProfileEngine, text: str
) -> None:
    """A ``timestamp`` property whose UTC moment is past year 9999 or before year 1 is a
    type mismatch of its record (converting it to UTC overflows), alone or in a clean batch."""
    fine = [_at(n, external_id=f"fine{n}", properties={"p_timestamp": T0}) for n in range(3)]
    bad = _at(0, external_id="bad", properties={"p_timestamp": text})
    aware = _at(0, external_id="bad", properties={"p_timestamp": datetime.fromisoformat(text)})
    results = events_engine.write_events(WS, [*fine, bad, aware])
    codes = [[e.code for e in r.errors] for r in results]
    assert codes == [[], [], [], ["property_type_mismatch"], ["property_type_mismatch"]]
    assert results[3].errors[0].location == ("properties", "p_timestamp")
    assert events_engine.pids_for(WS, ["bad"]) == [None]


def test_a_float_beyond_1e12_fails_its_record(events_engine: ProfileEngine) -> None:
    """A FLOAT property within ±1e12 is stored; beyond it the record is refused with
    ``property_out_of_range`` (sum and avg add micro-units: docs/rules.md), in a clean batch
    (checked by columns) as in one that is checked record by record."""
    fine = [_at(n, external_id=f"fine{n}", properties={"p_float": 1e12 - n}) for n in range(3)]
    bad = [_at(0, external_id="bad", properties={"p_float": v}) for v in (2e12, "-1e13")]
    results = events_engine.write_events(WS, [*fine, *bad])
    codes = [[e.code for e in r.errors] for r in results]
    assert codes == [[], [], [], ["property_out_of_range"], ["property_out_of_range"]]
    assert results[3].errors[0].location == ("properties", "p_float")
    mixed = [_at(0, external_id="bad", name=""), *bad]  # a bad name: checked record by record
    codes = [[e.code for e in r.errors] for r in events_engine.write_events(WS, mixed)]
    assert codes == [["event_name_invalid"], ["property_out_of_range"], ["property_out_of_range"]]
    assert events_engine.pids_for(WS, ["bad"]) == [None]
