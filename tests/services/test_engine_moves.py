"""Moving workspaces between engines (``services.engine_moves``): a DuckDB workspace copied to
PostgreSQL and to ClickHouse whole, a move cut midway and resumed (nothing lost, nothing
twice), a non-empty target refused, and memberships that read the same through the API after
switching engines."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from audiences.api.app import create_app
from audiences.config import Settings
from audiences.engines.base import EventRecord, ProfileEngine
from audiences.errors import Conflict
from audiences.schemas.enums import Role
from audiences.services.engine_moves import Checkpoints, MoveState, check_copy, move_workspace
from tests.engines.kinds import Store, opened
from tests.engines.test_portable import T0, WS, every_event, fill
from tests.factories import client_for, make_tenant
from tests.oracle import refresh

ROUTE = "duckdb -> postgres"


class Cut(Exception):
    """What the hooks below raise to stop a move midway, like a killed process."""


def cut_after(reports: int | None) -> Callable[[MoveState], None]:
    """A progress hook that raises :class:`Cut` at the ``reports``-th report (never if None)."""
    calls = [0]

    def stop(state: MoveState) -> None:
        calls[0] += 1
        if calls[0] == reports:
            raise Cut

    return stop


@pytest.fixture
def source(tmp_path: Path) -> Iterator[ProfileEngine]:
    """A DuckDB engine holding workspace ``acme``: every attribute type, gaps, 34 events."""
    with opened("duckdb", tmp_path / "source") as store:
        engine = store.open()
        fill(engine, people=30)
        yield engine


@pytest.fixture(params=["postgres", "clickhouse"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Empty storage of a bigger engine: a PostgreSQL schema of its own, or ClickHouse in
    process (chdb)."""
    with opened(request.param, tmp_path / "target") as store:
        yield store


def assert_same(source: ProfileEngine, target: ProfileEngine) -> None:
    """Every profile and every event reads the same on both engines."""
    assert target.export_profiles(WS, after_pid=0, limit=1000) == source.export_profiles(  # type: ignore[attr-defined]
        WS, after_pid=0, limit=1000
    )
    assert every_event(target) == every_event(source)


def test_a_move_copies_everything_and_checks_it(
    source: ProfileEngine, target: Store, tmp_path: Path
) -> None:
    seen: list[tuple[str, int, int]] = []
    state = move_workspace(
        source,
        target.open(),
        WS,
        route=ROUTE,
        checkpoints=Checkpoints(tmp_path / "moves"),
        batch_size=4,
        on_progress=lambda s: seen.append((s.phase, s.profiles_moved, s.events_moved)),
    )
    moved = target.open()
    assert_same(source, moved)
    assert (state.phase, state.profiles_moved, state.events_moved) == ("done", 28, 34)
    assert (state.profiles_total, state.events_total) == (28, 34)
    assert state.sampled == source.last_pid(WS) == 31  # type: ignore[attr-defined]
    # progress rose batch by batch, profiles first
    assert [m for phase, m, _ in seen if phase == "profiles"] == [0, 4, 8, 12, 16, 20, 24, 28]
    assert seen[-1] == ("done", 28, 34)
    saved = json.loads((tmp_path / "moves" / f"{WS}.json").read_text())
    assert saved["phase"] == "done" and saved["route"] == ROUTE
    # run again: a finished move only checks
    again = move_workspace(
        source, moved, WS, route=ROUTE, checkpoints=Checkpoints(tmp_path / "moves")
    )
    assert again.resumed and again.phase == "done"
    assert moved.count(WS) == 28


@pytest.mark.parametrize("cut_at", [3, 9, 14])
def test_a_cut_move_resumes_without_losing_or_repeating_anything(
    source: ProfileEngine, target: Store, tmp_path: Path, cut_at: int
) -> None:
    """Cut after ``cut_at`` progress reports (in the profiles, at the turn, in the events),
    then resumed with another batch size."""
    stop = cut_after(cut_at)
    checkpoints = Checkpoints(tmp_path / "moves")
    with pytest.raises(Cut):
        move_workspace(
            source,
            target.open(),
            WS,
            route=ROUTE,
            checkpoints=checkpoints,
            batch_size=3,
            on_progress=stop,
        )
    state = move_workspace(
        source, target.open(), WS, route=ROUTE, checkpoints=checkpoints, batch_size=5
    )
    assert state.resumed and state.phase == "done"
    assert (state.profiles_moved, state.events_moved) == (28, 34)
    assert_same(source, target.open())


class LosingCheckpoints(Checkpoints):
    """Checkpoints whose ``fail_at``-th save is lost with the process: the target committed
    the batch but the file still says the one before (the window a crash can hit)."""

    def __init__(self, folder: Path, fail_at: int) -> None:
        super().__init__(folder)
        self.saves, self.fail_at = 0, fail_at

    def save(self, state: MoveState) -> None:
        self.saves += 1
        if self.saves == self.fail_at:
            raise Cut
        super().save(state)


@pytest.mark.parametrize("fail_at", [4, 13])
def test_a_batch_committed_but_not_checkpointed_is_not_written_twice(
    source: ProfileEngine, target: Store, tmp_path: Path, fail_at: int
) -> None:
    folder = tmp_path / "moves"
    with pytest.raises(Cut):
        move_workspace(
            source,
            target.open(),
            WS,
            route=ROUTE,
            checkpoints=LosingCheckpoints(folder, fail_at),
            batch_size=4,
        )
    state = move_workspace(source, target.open(), WS, route=ROUTE, checkpoints=Checkpoints(folder))
    assert (state.profiles_moved, state.events_moved) == (28, 34)
    assert_same(source, target.open())


def test_a_target_holding_the_workspace_is_refused(
    source: ProfileEngine, target: Store, tmp_path: Path
) -> None:
    engine = target.open()
    engine.upsert_profiles(WS, [("someone", {})])
    with pytest.raises(Conflict) as caught:
        move_workspace(source, engine, WS, route=ROUTE, checkpoints=Checkpoints(tmp_path))
    assert caught.value.code == "engine_move_target_not_empty"
    assert engine.count(WS) == 1 and not (tmp_path / f"{WS}.json").exists()


def test_a_checkpoint_of_another_route_is_refused(
    source: ProfileEngine, target: Store, tmp_path: Path
) -> None:
    checkpoints = Checkpoints(tmp_path)
    checkpoints.save(MoveState(WS, "duckdb -> clickhouse"))
    with pytest.raises(Conflict) as caught:
        move_workspace(source, target.open(), WS, route=ROUTE, checkpoints=checkpoints)
    assert caught.value.code == "engine_move_route_changed"


def test_the_check_names_what_differs(source: ProfileEngine, target: Store, tmp_path: Path) -> None:
    engine = target.open()
    move_workspace(source, engine, WS, route=ROUTE, checkpoints=Checkpoints(tmp_path))
    source.upsert_profiles(WS, [("p5", {"age": 99})])
    with pytest.raises(Conflict) as caught:
        check_copy(source, engine, WS, sample_size=1000)
    assert caught.value.code == "engine_move_mismatch"
    assert [error.message for error in caught.value.errors] == [
        f"profile 6: {source.get_profile(WS, 'p5')!r} in the source, "
        f"{engine.get_profile(WS, 'p5')!r} in the target"
    ]


PEOPLE = {f"u{n}": {"country": ["US", "DE"][n % 2], "age": 20 + n} for n in range(30)}


def _app(folder: Path, store: dict[str, Any]) -> FastAPI:
    settings = Settings(
        **{"data_dir": folder, **store},
        database_url=f"sqlite:///{folder / 'audiences.db'}",
        rate_limit="100000/minute",
    )
    return create_app(settings)


def _close(app: FastAPI) -> None:
    app.state.runtime.profiles.close()
    app.state.engine.dispose()


def _members(app: FastAPI, token: str, audience_id: str) -> set[str]:
    client = client_for(app, token)
    try:
        page = client.get(f"/v1/audiences/{audience_id}/members", params={"limit": 200}).json()
    finally:
        client.close()
    return {member["id"] for member in page["data"]}


def test_memberships_hold_after_switching_engines(target: Store, tmp_path: Path) -> None:
    """Members are bitmaps of pids in the metadata database: after the move the API reads the
    same members on the new engine, and a refresh there computes the same set."""
    folder = tmp_path / "data"
    with opened("duckdb", folder) as duck:
        first = _app(folder, duck.settings)
        with make_tenant(first) as tenant:
            batch = [{"id": eid, "attributes": a} for eid, a in PEOPLE.items()]
            assert (
                tenant.write.post("/v1/profiles/batch", json={"profiles": batch}).status_code == 200
            )
            assert tenant.write.delete("/v1/profiles/u0").status_code == 204  # a gap at pid 1
            body = {
                "key": f"d-{uuid.uuid4().hex[:8]}",
                "name": "US 30+",
                "kind": "dynamic",
                "rule": "country = 'US' AND age >= 30",
            }
            audience = tenant.write.post("/v1/audiences", json=body).json()
            assert refresh(tenant.write, audience["id"])["status"] == "succeeded"
            token = tenant.tokens[Role.WRITE]
            workspace_id = tenant.workspace_id
        before = _members(first, token, audience["id"])
        assert before == {e for e, a in PEOPLE.items() if a["country"] == "US" and a["age"] >= 30}
        _close(first)
        move_workspace(
            duck.open(),
            target.open(),
            workspace_id,
            route=ROUTE,
            checkpoints=Checkpoints(folder / "moves"),
            batch_size=7,
        )
    second = _app(folder, target.settings)
    try:
        assert _members(second, token, audience["id"]) == before
        client = client_for(second, token)
        try:
            run = refresh(client, audience["id"])
            assert run["status"] == "succeeded" and run["size"] == len(before)
            put = client.put("/v1/profiles/new", json={"attributes": {"country": "US", "age": 60}})
            assert put.status_code == 201, put.text
            refresh(client, audience["id"])
        finally:
            client.close()
        assert _members(second, token, audience["id"]) == before | {"new"}
    finally:
        _close(second)


def _copies(engine: ProfileEngine) -> None:
    """Three events with one ``event_id``, each received after the dedupe window of the one
    before (so DuckDB stored each); in copy order (by pid) the last received comes first."""
    day = timedelta(days=1)
    for external_id, minute, moment in [
        ("z", 0, T0),
        ("a", 1, T0 + 8 * day),
        ("a", -1, T0 + 16 * day),
    ]:
        record = EventRecord(external_id, "order", T0 + timedelta(minutes=minute), event_id="same")
        [result] = engine.write_events(
            WS, [record], received_at=moment, dedupe_since=moment - timedelta(days=7)
        )
        assert result.ok and not result.duplicate
    engine.write_events(WS, [EventRecord("m", "view", T0, event_id="other")], received_at=T0)


@pytest.mark.parametrize("cut_at", [None, 4, 5])
@pytest.mark.parametrize("batch_size", [1, 10])
def test_copies_of_one_event_id_move_into_postgres_the_first_keeping_it(
    tmp_path: Path, batch_size: int, cut_at: int | None
) -> None:
    """PostgreSQL's unique index on ``event_id``: the first copy (by ``received_at``) keeps
    the id, the later ones arrive without it; no event is lost, cut and resumed or not (the
    reviewer's reproducer: a UniqueViolation, every run)."""
    stop = cut_after(cut_at)
    checkpoints = Checkpoints(tmp_path / "moves")
    with opened("duckdb", tmp_path / "s") as duck, opened("postgres", tmp_path / "t") as pg:
        source = duck.open()
        _copies(source)
        if cut_at is not None:
            with pytest.raises(Cut):
                move_workspace(
                    source,
                    pg.open(),
                    WS,
                    route=ROUTE,
                    checkpoints=checkpoints,
                    batch_size=batch_size,
                    on_progress=stop,
                )
        state = move_workspace(
            source, pg.open(), WS, route=ROUTE, checkpoints=checkpoints, batch_size=batch_size
        )
        assert state.phase == "done" and state.events_moved == state.events_total == 4
        moved = pg.open()
        ids = {
            (e.received_at, e.event_id) for _, e in every_event(moved) if e.event.name == "order"
        }
        assert ids == {
            (T0, "same"),
            (T0 + timedelta(days=8), None),
            (T0 + timedelta(days=16), None),
        }
        assert {e.event_id for _, e in every_event(moved)} >= {"other"}
        [again] = moved.write_events(WS, [EventRecord("a", "order", T0, event_id="same")])
        assert again.duplicate


def test_the_check_counts_the_event_ids(
    source: ProfileEngine, target: Store, tmp_path: Path
) -> None:
    """An event that reads the same but lost its id is a difference (events_of shows no ids)."""
    engine = target.open()
    move_workspace(source, engine, WS, route=ROUTE, checkpoints=Checkpoints(tmp_path))
    late = T0 + timedelta(days=30)
    for into, event_id in ((source, "late"), (engine, None)):
        record = EventRecord("p1", "view", late, event_id=event_id)
        assert into.write_events(WS, [record], received_at=late)[0].ok
    with pytest.raises(Conflict) as caught:
        check_copy(source, engine, WS, sample_size=1000)
    assert [error.message for error in caught.value.errors] == [
        f"event ids: {len(ids(source))} in the source, {len(ids(source)) - 1} in the target"
    ]


def ids(engine: ProfileEngine) -> set[str]:
    """The distinct event ids of the workspace, read from its export."""
    return {e.event_id for _, e in every_event(engine) if e.event_id is not None}
