"""Moving a workspace between engines (``base.Portable``): exports in pid and copy order, exact
imports that keep pids, ids and receipt times, and imports run twice that write once."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audiences.engines import portable
from audiences.engines.base import EventCursor, EventRecord, MovedEvent, Portable, StoredEvent
from audiences.errors import Conflict
from audiences.schemas.attributes import AttributeType
from audiences.schemas.events import Event
from tests.engines.conftest import SCHEMA, WS
from tests.engines.kinds import opened

PORTABLE = ("duckdb", "postgres", "clickhouse")
"""The kinds that implement ``Portable``: every engine."""

EVENT_SCHEMA = {
    "amount": AttributeType.FLOAT,
    "sku": AttributeType.STRING,
    "meta": AttributeType.JSON,
    "shipped": AttributeType.TIMESTAMP,
    "items": AttributeType.STRING_LIST,
}
T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


def person(n: int) -> dict[str, Any]:
    """Attributes of every type, some unset, and an undeclared one."""
    return {
        "country": ["US", "DE", None][n % 3],
        "age": 20 + n,
        "lifetime_value": n * 1.5,
        "churned": n % 2 == 0,
        "last_seen": (T0 + timedelta(hours=n)).isoformat(),
        "signup_date": date(2025, 1, 1 + n % 28).isoformat(),
        "tags": ["vip", f"t{n}"] if n % 4 else [],
        "scores": [n, n / 3],
        "settings": {"theme": "dark", "n": n, "nested": [1, {"a": None}]},
        "nickname": f"nick{n}",
    }


def fill(engine: Any, people: int = 12, workspace: str = WS) -> None:
    """Profiles of every attribute type, some deleted (gaps, and the highest pid), and 34
    events with and without ids, several at one time."""
    engine.ensure_attributes(workspace, SCHEMA)
    engine.ensure_event_properties(workspace, EVENT_SCHEMA)
    engine.upsert_profiles(workspace, [(f"p{n}", person(n)) for n in range(people)])
    engine.delete_profile(workspace, "p3")
    engine.delete_profile(workspace, f"p{people - 1}")
    records = [
        EventRecord(
            f"p{n % 7}",
            "purchase" if n % 2 else "view",
            T0 + timedelta(minutes=n // 3),
            {
                "amount": float(n),
                "sku": f"s{n % 4}",
                "meta": {"n": n, "deep": [n, {"x": None}]},
                "shipped": (T0 + timedelta(days=n)).isoformat(),
                "items": [f"i{n}", "j"],
            }
            if n % 5
            else {},
            event_id=f"e{n}" if n % 3 else None,
        )
        for n in range(40)
    ]
    engine.write_events(workspace, records, received_at=T0 + timedelta(days=1))
    engine.delete_profile(
        workspace, "p3"
    )  # made again by its events (pid 13): now the highest, gone


@pytest.fixture(params=[(a, b) for a in PORTABLE for b in PORTABLE])
def pair(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """A filled source engine and an empty target engine, of each pair of portable kinds."""
    source_kind, target_kind = request.param
    with opened(source_kind, tmp_path / "a") as a, opened(target_kind, tmp_path / "b") as b:
        source = a.open()
        fill(source)
        yield source, b


def copy_all(source: Any, target: Any, batch: int) -> None:
    target.ensure_attributes(WS, source.attributes(WS))
    target.ensure_event_properties(WS, source.event_properties(WS))
    after_pid = 0
    while profiles := source.export_profiles(WS, after_pid=after_pid, limit=batch):
        target.import_profiles(WS, profiles)
        after_pid = profiles[-1].pid
    target.reserve_pids(WS, source.last_pid(WS))
    after: EventCursor | None = None
    while True:
        events, following = source.export_events(WS, after=after, limit=batch)
        if not events:
            break
        target.import_events(WS, events, after=after)
        after = following


def every_event(engine: Any, workspace: str = WS) -> list[MovedEvent]:
    events, _ = engine.export_events(workspace, after=None, limit=10_000)
    return list(events)


def test_a_copy_keeps_pids_attributes_events_and_the_pid_sequence(pair: Any) -> None:
    source, store = pair
    assert isinstance(source, Portable)
    target = store.open()
    copy_all(source, target, batch=3)
    profiles = source.export_profiles(WS, after_pid=0, limit=100)
    assert [p.pid for p in profiles] == [1, 2, 3, 5, 6, 7, 8, 9, 10, 11]  # 4, 12, 13 deleted
    assert target.export_profiles(WS, after_pid=0, limit=100) == profiles
    assert target.attributes(WS) == source.attributes(WS)
    assert target.get_profile(WS, "p5") == source.get_profile(WS, "p5")
    assert target.pids_for(WS, ["p7", "p3"]) == [8, None]
    moved = every_event(source)
    assert len(moved) == 34 and every_event(target) == moved
    assert {e.event_id for _, e in moved} >= {"e1", "e2"}
    assert target.count_events(WS) == 34
    # pids are never reused: the deleted highest pid (13) stays given out
    assert target.last_pid(WS) == source.last_pid(WS) == 13
    assert target.upsert_profiles(WS, [("new", {})])[0].pid == 14
    # the copied events keep their ids: writing one again is a duplicate
    again = target.write_events(WS, [EventRecord("p1", "view", T0, event_id="e1")])
    assert again[0].duplicate


def test_importing_a_batch_twice_writes_it_once(pair: Any) -> None:
    source, store = pair
    target = store.open()
    target.ensure_attributes(WS, source.attributes(WS))
    target.ensure_event_properties(WS, source.event_properties(WS))
    profiles = source.export_profiles(WS, after_pid=0, limit=4)
    assert target.import_profiles(WS, profiles) == 4
    assert target.import_profiles(WS, profiles) == 0
    assert target.import_profiles(WS, source.export_profiles(WS, after_pid=0, limit=6)) == 2
    target.import_profiles(WS, source.export_profiles(WS, after_pid=0, limit=100))
    first, cursor = source.export_events(WS, after=None, limit=5)
    assert target.import_events(WS, first, after=None) == 5
    assert target.import_events(WS, first, after=None) == 0
    # a resume with another batch size: the overlap is left out
    wider, _ = source.export_events(WS, after=None, limit=9)
    assert target.import_events(WS, wider, after=None) == 4
    rest, _ = source.export_events(WS, after=cursor, limit=100)
    assert target.import_events(WS, rest, after=cursor) == 34 - 9
    assert every_event(target) == every_event(source)


def test_events_after_a_gap_are_refused(pair: Any) -> None:
    source, store = pair
    target = store.open()
    target.ensure_event_properties(WS, source.event_properties(WS))
    _, cursor = source.export_events(WS, after=None, limit=5)
    later, _ = source.export_events(WS, after=cursor, limit=5)
    with pytest.raises(Conflict) as caught:
        target.import_events(WS, later, after=cursor)
    assert caught.value.code == "engine_move_gap"
    assert target.count_events(WS) == 0


@pytest.mark.parametrize("kind", PORTABLE)
def test_an_unknown_workspace_exports_nothing(kind: str, tmp_path: Path) -> None:
    with opened(kind, tmp_path) as store:
        engine = store.open()
        assert engine.export_profiles("nobody", after_pid=0, limit=5) == []
        assert engine.export_events("nobody", after=None, limit=5) == ([], None)
        assert engine.last_pid("nobody") == 0
        assert engine.count_events("nobody") == 0


def _stored(pid: int) -> MovedEvent:
    return pid, StoredEvent(Event("e", T0), None, T0)


@settings(max_examples=200, deadline=None)
@given(
    pids=st.lists(st.integers(1, 4), max_size=12).map(sorted),
    cut=st.integers(0, 12),
    held_at=st.integers(0, 12),
)
def test_left_to_write_keeps_exactly_the_events_past_the_targets_cursor(
    pids: list[int], cut: int, held_at: int
) -> None:
    """Oracle: the whole stream numbered 0..n-1; a target holding the first ``held_at`` and
    a batch of the events from ``cut`` on must receive exactly those from max(cut, held_at)
    on, or be refused when it holds fewer than ``cut``."""
    stream = [_stored(pid) for pid in pids]
    cut, held_at = min(cut, len(stream)), min(held_at, len(stream))
    cursors = portable.positions(stream, None)
    after = cursors[cut - 1] if cut else None
    held = cursors[held_at - 1] if held_at else None
    batch = stream[cut:]
    if held_at < cut:
        with pytest.raises(Conflict):
            portable.left_to_write(batch, after, held)
        return
    written = portable.left_to_write(batch, after, held)
    assert len(written) == len(stream) - held_at
    assert portable.positions(written, held) == cursors[held_at:]


@settings(max_examples=300, deadline=None)
@given(
    copies=st.lists(st.tuples(st.sampled_from(["a", "b", None]), st.integers(0, 3)), max_size=12),
    cuts=st.lists(st.integers(0, 12), max_size=4),
)
def test_each_event_id_goes_to_its_first_copy_whatever_the_batches(
    copies: list[tuple[str | None, int]], cuts: list[int]
) -> None:
    """Oracle: over the whole stream, an id stays on its copy with the least ``received_at``
    (then the first in copy order) and every other copy loses it. A target fed the stream in
    batches (``cuts``), holding one row per id as PostgreSQL's unique index does, ends the
    same, every event kept."""
    stream = [
        (n, StoredEvent(Event("e", T0), event_id, T0 + timedelta(hours=hours)))
        for n, (event_id, hours) in enumerate(copies)
    ]
    first = {
        event_id: min(n for n, e in stream if e.event_id == event_id and e.received_at == least)
        for event_id, least in {
            i: min(e.received_at for _, e in stream if e.event_id == i)
            for i in {e.event_id for _, e in stream if e.event_id is not None}
        }.items()
    }
    target: list[MovedEvent] = []
    bounds = sorted({0, len(stream), *(min(c, len(stream)) for c in cuts)})
    for start, end in pairwise(bounds):
        stored = {e.event_id: e.received_at for _, e in target if e.event_id is not None}
        batch, taken = portable.first_copies_keep_ids(stream[start:end], stored)
        target = [
            (n, replace(e, event_id=None) if e.event_id in taken else e) for n, e in target
        ] + batch
    assert [n for n, _ in target] == [n for n, _ in stream]
    held = [e.event_id for _, e in target if e.event_id is not None]
    assert len(held) == len(set(held))
    assert {n: e.event_id for n, e in target if e.event_id is not None} == {
        n: i for i, n in first.items()
    }
