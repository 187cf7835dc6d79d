"""The DuckDB engine's streaming copy (``engines.duckdb_streaming_copy``): reads of slices answer
exactly what the events table holds, through writes, erasure, retention, new property columns,
imports, widened rules and pruning. The oracle is a model of the events written, kept in the
test."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audiences.engines import duckdb_streaming_copy
from audiences.engines.base import EventCursor, EventRecord, EventSlice, StoredEvent
from audiences.engines.duckdb import DuckDBEngine
from audiences.engines.idindex import IdIndex
from audiences.schemas.attributes import AttributeType
from audiences.schemas.events import Event

WS = "acme"
T0 = datetime(2026, 3, 1, tzinfo=UTC)
PEOPLE = [f"u{n}" for n in range(6)]
NAMES = ["order", "page", "signup"]
FAMILIES: list[list[tuple[tuple[str, ...] | None, int | None]]] = [
    [(("order",), None)],
    [(("order",), 30), (("page",), 2)],
    [(("order", "signup"), 10), (None, 1)],
    [(None, 5)],
    [(("order", "signup"), 30), (("order",), 5)],
    [(("order", "signup"), 1), (("order",), 20)],  # "order" held by the wider set's slice
    [(("order",), 3)],  # a rule gone: the others' events may leave the copy
]
"""Sets of slices a read asks for: names (None: any) and how many days back (None: ever)."""


@dataclass
class Model:
    """What the events table must hold: each external id's events (name, time, properties)."""

    events: dict[str, list[tuple[str, datetime, tuple[tuple[str, Any], ...]]]] = field(
        default_factory=dict
    )

    def expected(self, slices: list[EventSlice]) -> dict[str, Counter[Any]]:
        """Each profile's events in one of ``slices``, as a multiset."""
        found: dict[str, Counter[Any]] = {}
        for person, events in self.events.items():
            kept = Counter(
                event
                for event in events
                if any(
                    (s.names is None or event[0] in s.names)
                    and (s.since is None or event[1] >= s.since)
                    for s in slices
                )
            )
            if kept:
                found[person] = kept
        return found


@pytest.fixture
def copies_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """Copies kept however few the events and whatever their share, pruned at every read."""
    monkeypatch.setattr(duckdb_streaming_copy, "MIN_EVENTS", 0)
    monkeypatch.setattr(duckdb_streaming_copy, "MAX_SHARE", 1.0)
    monkeypatch.setattr(duckdb_streaming_copy, "PRUNE_SECONDS", 0.0)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[DuckDBEngine]:
    made = DuckDBEngine(tmp_path)
    made.ensure_event_properties(WS, {"amount": AttributeType.FLOAT})
    yield made
    made.close()


def _read(
    engine: DuckDBEngine, pids: dict[str, int], slices: list[EventSlice]
) -> dict[str, Counter[Any]]:
    """The events of ``slices`` of every profile that ever had a pid (an erased one's pid
    included: pids are never given out again, so it must read as nothing)."""
    found = engine.events_of(WS, list(pids.values()), slices=slices)
    return {
        person: Counter(
            (e.name, e.timestamp, tuple(sorted(e.properties.items()))) for e in found[pid]
        )
        for person, pid in pids.items()
        if found.get(pid)
    }


ORDERS = [EventSlice(("order",), None)]


def _one_order_read(engine: DuckDBEngine) -> int:
    """Profile u1 with one order, read once through ``ORDERS`` (which builds a copy when the
    test keeps copies); its pid."""
    engine.write_events(WS, [EventRecord("u1", "order", T0)])
    [pid] = engine.pids_for(WS, ["u1"])
    assert pid is not None
    assert len(engine.events_of(WS, [pid], slices=ORDERS)[pid]) == 1
    return pid


def _copy_tables(engine: DuckDBEngine) -> int:
    row = engine._writer.execute(  # the engine's own connection: the copies live in memory
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = ?",
        [engine._copies],
    ).fetchone()
    return int(row[0]) if row else 0


steps = st.lists(
    st.one_of(
        st.tuples(
            st.just("write"),
            st.lists(
                st.tuples(
                    st.sampled_from(PEOPLE),
                    st.sampled_from(NAMES),
                    st.integers(-40 * 24, 2 * 24),  # hours from the clock
                    st.one_of(st.none(), st.integers(0, 500)),
                ),
                min_size=1,
                max_size=12,
            ),
        ),
        st.tuples(st.just("read"), st.integers(0, len(FAMILIES) - 1)),
        st.tuples(st.just("tick"), st.integers(-24, 4 * 24)),  # hours the clock moves
        st.tuples(st.just("erase"), st.sampled_from(PEOPLE)),
        st.tuples(st.just("expire"), st.integers(5, 45)),  # days kept
        st.tuples(st.just("declare"), st.sampled_from(["channel", "sku"])),
    ),
    max_size=30,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(program=steps)
def test_reads_through_the_copy_answer_what_the_table_holds(
    tmp_path_factory: pytest.TempPathFactory, copies_kept: None, program: list[Any]
) -> None:
    engine = DuckDBEngine(tmp_path_factory.mktemp("copy"))
    engine.ensure_event_properties(WS, {"amount": AttributeType.FLOAT})
    model, now, pids = Model(), T0, {}
    try:
        for step in program:
            if step[0] == "write":
                records = []
                for person, name, hours, amount in step[1]:
                    props = {} if amount is None else {"amount": amount / 4}
                    when = now + timedelta(hours=hours)
                    records.append(EventRecord(person, name, when, props))
                    model.events.setdefault(person, []).append(
                        (name, when, tuple(sorted(props.items())))
                    )
                results = engine.write_events(WS, records)
                assert all(result.ok for result in results)
                pids.update((result.external_id, result.pid) for result in results)
            elif step[0] == "read":
                slices = [
                    EventSlice(names, None if days is None else now - timedelta(days=days))
                    for names, days in FAMILIES[step[1]]
                ]
                assert _read(engine, pids, slices) == model.expected(slices)
            elif step[0] == "tick":
                now += timedelta(hours=step[1])
            elif step[0] == "erase":
                if engine.delete_profile(WS, step[1]) is not None:
                    model.events.pop(step[1], None)
            elif step[0] == "expire":
                before = now - timedelta(days=step[1])
                engine.drop_events_before(WS, before)
                for events in model.events.values():
                    events[:] = [e for e in events if e[1] >= before]
            else:
                engine.ensure_event_properties(WS, {step[1]: AttributeType.STRING})
        assert _copy_tables(engine) <= 1  # one copy a workspace, replaced when rebuilt
    finally:
        engine.close()


def test_a_read_is_served_by_a_copy_that_holds_only_its_slices(
    engine: DuckDBEngine, copies_kept: None
) -> None:
    engine.write_events(
        WS,
        [
            EventRecord("u1", "order", T0 - timedelta(days=40), {"amount": 5.0}),
            EventRecord("u1", "page", T0 - timedelta(days=3)),
            EventRecord("u1", "page", T0 - timedelta(hours=1)),
        ],
    )
    slices = [EventSlice(("order",), None), EventSlice(("page",), T0 - timedelta(days=1))]
    [pid] = engine.pids_for(WS, ["u1"])
    assert pid is not None
    first = engine.events_of(WS, [pid], slices=slices)[pid]
    assert [(e.name, e.properties) for e in first] == [("order", {"amount": 5.0}), ("page", {})]
    assert _copy_tables(engine) == 1
    events = engine._workspace(WS).events  # type: ignore[union-attr]
    copy = duckdb_streaming_copy.table_of(engine._copies, events)
    held = engine._writer.execute(f"SELECT event FROM {copy} ORDER BY event").fetchall()
    assert held == [("order",), ("page",)]  # the page of three days ago is in no slice
    engine.write_events(WS, [EventRecord("u1", "signup", T0), EventRecord("u1", "order", T0)])
    assert len(engine.events_of(WS, [pid], slices=slices)[pid]) == 3


def test_a_copy_that_would_hold_most_events_is_not_kept(
    engine: DuckDBEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(duckdb_streaming_copy, "MIN_EVENTS", 0)
    engine.write_events(
        WS, [EventRecord("u1", "order", T0 + timedelta(minutes=n)) for n in range(8)]
    )
    [pid] = engine.pids_for(WS, ["u1"])
    assert pid is not None
    found = engine.events_of(WS, [pid], slices=[EventSlice(("order",), None)])[pid]
    assert len(found) == 8 and _copy_tables(engine) == 0


def test_reading_every_event_builds_no_copy(engine: DuckDBEngine, copies_kept: None) -> None:
    engine.write_events(WS, [EventRecord("u1", "order", T0)])
    [pid] = engine.pids_for(WS, ["u1"])
    assert pid is not None
    assert len(engine.events_of(WS, [pid], slices=[EventSlice(None, None)])[pid]) == 1
    assert len(engine.events_of(WS, [pid])[pid]) == 1
    assert _copy_tables(engine) == 0


def test_an_import_drops_the_copy_and_the_next_read_sees_its_events(
    engine: DuckDBEngine, copies_kept: None
) -> None:
    pid = _one_order_read(engine)
    moved = StoredEvent(Event("order", T0 + timedelta(hours=1), {}), None, T0)
    assert engine.import_events(WS, [(pid, moved)], after=EventCursor(pid, 1)) == 1
    assert _copy_tables(engine) == 0
    assert len(engine.events_of(WS, [pid], slices=ORDERS)[pid]) == 2


def test_erased_and_expired_events_leave_the_copy(engine: DuckDBEngine, copies_kept: None) -> None:
    engine.write_events(
        WS,
        [
            EventRecord("u1", "order", T0 - timedelta(days=50)),
            EventRecord("u1", "order", T0),
            EventRecord("u2", "order", T0),
        ],
    )
    pids = engine.pids_for(WS, ["u1", "u2"])
    slices = [EventSlice(("order",), None)]
    assert sum(map(len, engine.events_of(WS, pids, slices=slices).values())) == 3
    engine.drop_events_before(WS, T0 - timedelta(days=30))
    assert [len(engine.events_of(WS, [pid], slices=slices)[pid]) for pid in pids] == [1, 1]
    engine.delete_profile(WS, "u2")
    assert list(engine.events_of(WS, pids, slices=slices)) == [pids[0]]
    assert _copy_tables(engine) == 1  # followed, not rebuilt


def test_a_read_earlier_than_the_copy_holds_rebuilds_it(
    engine: DuckDBEngine, copies_kept: None
) -> None:
    engine.write_events(
        WS, [EventRecord("u1", "page", T0 - timedelta(hours=h)) for h in (1, 30, 60)]
    )
    [pid] = engine.pids_for(WS, ["u1"])

    def read(now: datetime) -> int:
        slices = [EventSlice(("page",), now - timedelta(days=1))]
        return len(engine.events_of(WS, [pid], slices=slices).get(pid, []))

    assert [read(T0), read(T0 + timedelta(hours=12))] == [1, 1]  # the second prunes
    assert read(T0 - timedelta(days=1)) == 2  # the clock set back: more than the copy holds


def test_a_copy_that_fails_is_dropped_and_the_table_read(
    engine: DuckDBEngine, copies_kept: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid = _one_order_read(engine)

    def fail(*args: object, **kwargs: object) -> None:
        raise duckdb.OutOfMemoryException("injected")

    monkeypatch.setattr(duckdb_streaming_copy, "append", fail)
    engine.write_events(WS, [EventRecord("u1", "order", T0 + timedelta(hours=1))])
    assert _copy_tables(engine) == 0  # dropped, not left behind the table
    monkeypatch.setattr(duckdb_streaming_copy, "build", fail)
    assert len(engine.events_of(WS, [pid], slices=ORDERS)[pid]) == 2
    monkeypatch.undo()
    monkeypatch.setattr(duckdb_streaming_copy, "MAX_SHARE", 1.0)
    assert len(engine.events_of(WS, [pid], slices=ORDERS)[pid]) == 2
    assert _copy_tables(engine) == 0  # a failed build is not tried again for these slices


def test_two_engines_of_one_process_on_one_file_keep_copies_of_their_own(
    tmp_path: Path, copies_kept: None
) -> None:
    """They share DuckDB's instance, not their copies (only one of them may write: each
    engine's caches see the writes made through it alone, the module's docstring says)."""
    first, second = DuckDBEngine(tmp_path), DuckDBEngine(tmp_path)
    first.write_events(WS, [EventRecord("u1", "order", T0)])
    [pid] = first.pids_for(WS, ["u1"])
    slices = [EventSlice(("order",), None)]
    assert [len(e.events_of(WS, [pid], slices=slices)[pid]) for e in (first, second)] == [1, 1]
    assert _copy_tables(first) == _copy_tables(second) == 1
    first.close()
    assert len(second.events_of(WS, [pid], slices=slices)[pid]) == 1
    second.close()


def test_closing_twice_is_harmless(tmp_path: Path) -> None:
    engine = DuckDBEngine(tmp_path)
    engine.close()
    engine.close()


def _held(engine: DuckDBEngine) -> int:
    events = engine._workspace(WS).events  # type: ignore[union-attr]
    table = duckdb_streaming_copy.table_of(engine._copies, events)
    row = engine._writer.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0]) if row else 0


def test_a_prune_keeps_what_a_read_covered_through_a_wider_slice_needs(
    engine: DuckDBEngine, copies_kept: None
) -> None:
    engine.write_events(
        WS,
        [
            EventRecord("u1", "a", T0 - timedelta(days=10)),
            EventRecord("u1", "b", T0 - timedelta(days=10)),
            EventRecord("u1", "a", T0),
        ],
    )
    [pid] = engine.pids_for(WS, ["u1"])

    def read(a_days: int, ab_days: int) -> int:
        slices = [
            EventSlice(("a",), T0 - timedelta(days=a_days)),
            EventSlice(("a", "b"), T0 - timedelta(days=ab_days)),
        ]
        return len(engine.events_of(WS, [pid], slices=slices)[pid])

    assert read(5, 30) == 3
    assert read(20, 1) == 2  # "a" since 20 days: held by the ("a", "b") slice, pruned to it


def test_the_events_of_a_rule_gone_leave_the_copy(engine: DuckDBEngine, copies_kept: None) -> None:
    engine.write_events(
        WS, [EventRecord("u1", name, T0 - timedelta(hours=1)) for name in ("a", "b", "b")]
    )
    [pid] = engine.pids_for(WS, ["u1"])
    both = [EventSlice(("a",), T0 - timedelta(days=1)), EventSlice(("b",), T0 - timedelta(days=1))]
    assert len(engine.events_of(WS, [pid], slices=both)[pid]) == 3
    assert _held(engine) == 3
    only_a = [EventSlice(("a",), T0 - timedelta(days=1))]
    assert len(engine.events_of(WS, [pid], slices=only_a)[pid]) == 1
    assert _held(engine) == 1


def test_shares_are_judged_again(
    engine: DuckDBEngine, copies_kept: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy grown past its share is dropped at a prune; a decision to keep none expires."""
    monkeypatch.setattr(duckdb_streaming_copy, "MAX_SHARE", 0.5)
    engine.write_events(WS, [EventRecord("u1", "a", T0), EventRecord("u1", "b", T0)])
    [pid] = engine.pids_for(WS, ["u1"])
    slices = [EventSlice(("a",), None)]
    assert len(engine.events_of(WS, [pid], slices=slices)[pid]) == 1
    assert _copy_tables(engine) == 1  # 1 of 2 events
    engine.write_events(WS, [EventRecord("u1", "a", T0)])
    assert len(engine.events_of(WS, [pid], slices=slices)[pid]) == 2
    assert _copy_tables(engine) == 0  # 2 of 3: beyond the share
    engine.write_events(WS, [EventRecord("u1", "b", T0)] * 3)
    assert len(engine.events_of(WS, [pid], slices=slices)[pid]) == 2
    assert _copy_tables(engine) == 0  # the decision stands a while
    monkeypatch.setattr(duckdb_streaming_copy, "RECHECK_SECONDS", 0.0)
    assert len(engine.events_of(WS, [pid], slices=slices)[pid]) == 2
    assert _copy_tables(engine) == 1  # 2 of 6


def test_a_failure_after_the_commit_leaves_the_copy_followed(
    engine: DuckDBEngine, copies_kept: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine.write_events(WS, [EventRecord("u1", "order", T0), EventRecord("u2", "order", T0)])
    pids = engine.pids_for(WS, ["u1", "u2"])
    slices = [EventSlice(("order",), None)]
    assert len(engine.events_of(WS, pids, slices=slices)) == 2

    def fail(*args: object) -> None:
        raise MemoryError("injected")

    monkeypatch.setattr(IdIndex, "add_many", fail)
    monkeypatch.setattr(IdIndex, "remove", fail)
    with pytest.raises(MemoryError):
        engine.write_events(WS, [EventRecord("u3", "order", T0)])
    with pytest.raises(MemoryError):
        engine.delete_profile(WS, "u2")
    monkeypatch.undo()
    found = engine.events_of(WS, [*pids, pids[1] + 1], slices=slices)
    assert sorted(found) == [pids[0], pids[1] + 1]  # u3 written, u2 erased, as in the table


def test_any_failure_of_the_copy_leaves_the_other_caches_taught(
    engine: DuckDBEngine, copies_kept: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    _one_order_read(engine)
    assert _copy_tables(engine) == 1

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("injected")

    monkeypatch.setattr(duckdb_streaming_copy, "append", fail)
    [first] = engine.write_events(WS, [EventRecord("new", "order", T0)])
    monkeypatch.undo()
    assert _copy_tables(engine) == 0  # dropped
    [again] = engine.write_events(WS, [EventRecord("new", "order", T0)])
    assert again.pid == first.pid  # the id index learned the profile the write made
