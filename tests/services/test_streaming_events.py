"""Streaming evaluation of behavioural rules: event writes, profile writes and the sweep keep
streaming audiences equal to a batch run at the same moment (issue #13, "Done when")."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from audiences.engines import duckdb_streaming_copy
from audiences.engines.base import EventRecord
from audiences.schemas.api_keys import Role
from audiences.services import evaluation, events, profiles
from audiences.services.callers import Caller
from audiences.services.evaluation import compiled
from tests.factories import Tenant, make_audience, make_tenant

START = datetime(2026, 3, 1, 12, tzinfo=UTC)
LIMITS = events.Limits(10_000, timedelta(days=1))
RULES = {
    "busy": "count(*) FILTER (WHERE event = 'order' AND timestamp >= now() - INTERVAL 2 HOUR) >= 2",
    "gone": "max(timestamp) FILTER (WHERE event = 'view') < now() - INTERVAL 90 MINUTE",
    "mid": (
        "sum(amount) FILTER (WHERE timestamp BETWEEN now() - INTERVAL 3 HOUR"
        " AND now() - INTERVAL 1 HOUR) > 10"
    ),
    "new_us": (
        "min(timestamp) FILTER (WHERE event = 'order') >= now() - INTERVAL 150 MINUTE"
        " AND country = 'US'"
    ),
    "last_big": "last(amount) FILTER (WHERE timestamp >= now() - INTERVAL 100 MINUTE) > 5",
    "quiet": "NOT in_audience('busy') AND count(*) >= 1",
    "ever": "count(DISTINCT event) >= 2",
}
SCOPED = {
    "busy": RULES["busy"],
    "gone": RULES["gone"],
    "mid": (
        "sum(amount) FILTER (WHERE event IN ('order', 'click') AND timestamp BETWEEN"
        " now() - INTERVAL 3 HOUR AND now() - INTERVAL 1 HOUR) > 10"
    ),
    "new_us": RULES["new_us"],
    "last_big": RULES["last_big"],
    "quiet": "NOT in_audience('busy') AND count(*) FILTER (WHERE event = 'click') >= 1",
    "ever": "count(DISTINCT event) FILTER (WHERE event IN ('order', 'view')) >= 2",
}
"""Rules that each read some of the events (by name, by window or both): streaming reads only
those (``rules.event_scopes``), where ``RULES`` has two that read them all."""
PEOPLE = [f"p{n}" for n in range(6)]


def streaming_audiences(tenant: Tenant, rules: dict[str, str] = RULES) -> dict[str, str]:
    """The rules (default: those above) as streaming audiences; their ids by key."""
    tenant.admin.put("/v1/event-properties/amount", json={"type": "float"})
    made = {}
    for key, rule in rules.items():
        body = make_audience(tenant.admin, key=key, rule=rule, refresh_policy={"mode": "streaming"})
        assert body["evaluation_mode"]["mode"] == "streaming", (key, body["evaluation_mode"])
        made[key] = body["id"]
    return made


@contextmanager
def session_of(app: FastAPI) -> Iterator[Session]:
    with app.state.session_factory() as session:
        yield session
        session.commit()


def write_events(app: FastAPI, tenant: Tenant, records: list[EventRecord], now: datetime) -> None:
    with session_of(app) as session:
        results = events.write(
            session,
            workspace_id=tenant.workspace_id,
            runtime=app.state.runtime,
            records=records,
            limits=LIMITS,
            received_at=now,
        )
    assert all(result.ok for result in results)


def write_profiles(app: FastAPI, tenant: Tenant, countries: dict[str, str], now: datetime) -> None:
    caller = Caller(tenant.workspace_id, tenant.slug, "k", Role.WRITE)
    with session_of(app) as session, compiled.at(now):
        profiles.upsert(
            session,
            caller=caller,
            runtime=app.state.runtime,
            records=[(pid, {"country": c}) for pid, c in countries.items()],
        )


def sweep(
    app: FastAPI, tenant: Tenant, since: datetime | None, until: datetime
) -> evaluation.Swept:
    with session_of(app) as session:
        return evaluation.sweep(
            session,
            runtime=app.state.runtime,
            workspace_id=tenant.workspace_id,
            since=since,
            until=until,
        )


def streaming_members(
    app: FastAPI, tenant: Tenant, rules: dict[str, str] = RULES
) -> dict[str, set[int]]:
    with session_of(app) as session:
        sets = compiled.member_sets(session, app.state.runtime, tenant.workspace_id)
    return {key: set(sets[key]) for key in rules}


def batch_members(
    app: FastAPI, tenant: Tenant, now: datetime, rules: dict[str, str] = RULES
) -> dict[str, set[int]]:
    """Every audience by batch SQL at ``now``; ``in_audience`` reads the stored members of the
    audience asked about, which is checked first."""
    found = {}
    with session_of(app) as session:
        schema = compiled.workspace_schema(session, tenant.workspace_id)
        for key, rule in rules.items():
            found[key] = set(
                evaluation.select_members(
                    session,
                    runtime=app.state.runtime,
                    workspace_id=tenant.workspace_id,
                    rule=evaluation.bound_rule(rule, schema),
                    now=now,
                )
            )
    return found


@dataclass(frozen=True)
class Step:
    advance: timedelta
    events: list[tuple[int, str, int, float | None]]
    """(person, name, minutes from the step's time, amount)."""
    countries: dict[int, str]


STEPS = st.builds(
    Step,
    advance=st.integers(0, 100).map(lambda m: timedelta(minutes=m, seconds=m % 7)),
    events=st.lists(
        st.tuples(
            st.integers(0, len(PEOPLE) - 1),
            st.sampled_from(["order", "view", "click", "signup"]),
            st.integers(-240, 3),
            st.none() | st.floats(0, 12, allow_nan=False).map(lambda x: round(x, 1)),
        ),
        max_size=6,
    ),
    countries=st.dictionaries(
        st.integers(0, len(PEOPLE) - 1), st.sampled_from(["US", "FR"]), max_size=2
    ),
)


@settings(
    max_examples=16,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(steps=st.lists(STEPS, min_size=1, max_size=6), scoped=st.booleans(), copied=st.booleans())
def test_streaming_equals_batch_after_writes_and_as_time_moves(
    app: FastAPI, steps: list[Step], scoped: bool, copied: bool
) -> None:
    rules = SCOPED if scoped else RULES
    with make_tenant(app) as tenant, pytest.MonkeyPatch.context() as patch:
        if copied:  # the DuckDB engine reads a streaming copy, however small, pruned each read
            patch.setattr(duckdb_streaming_copy, "MIN_EVENTS", 0)
            patch.setattr(duckdb_streaming_copy, "MAX_SHARE", 1.0)
            patch.setattr(duckdb_streaming_copy, "PRUNE_SECONDS", 0.0)
        streaming_audiences(tenant, rules)
        now = START
        swept = sweep(app, tenant, None, now)  # the first sweep: an exact batch refresh
        assert swept.refreshed == len(rules)
        for step in steps:
            since, now = now, now + step.advance
            sweep(app, tenant, since, now)
            expected = batch_members(app, tenant, now, rules)
            assert streaming_members(app, tenant, rules) == expected, "time"
            records = [
                EventRecord(
                    PEOPLE[who],
                    name,
                    now + timedelta(minutes=minutes),
                    {} if amount is None else {"amount": amount},
                )
                for who, name, minutes, amount in step.events
            ]
            if records:
                write_events(app, tenant, records, now)
            if step.countries:
                write_profiles(app, tenant, {PEOPLE[p]: c for p, c in step.countries.items()}, now)
            expected = batch_members(app, tenant, now, rules)
            assert streaming_members(app, tenant, rules) == expected, "writes"


def test_events_exactly_on_a_window_bound_are_read(app: FastAPI, tenant: Tenant) -> None:
    """Streaming reads an event timed exactly ``now - INTERVAL`` (the bound is included)."""
    rules = {
        "two_buys": (
            "count(*) FILTER (WHERE event = 'buy' AND timestamp >= now() - INTERVAL 2 HOUR) >= 2"
        ),
        "spent": (
            "sum(amount) FILTER (WHERE event IN ('buy', 'refund') AND timestamp BETWEEN"
            " now() - INTERVAL 3 HOUR AND now() - INTERVAL 1 HOUR) > 10"
        ),
    }
    streaming_audiences(tenant, rules)
    sweep(app, tenant, None, START)
    hour, tick = timedelta(hours=1), timedelta(microseconds=1)
    records = [
        EventRecord("edge", "buy", START - 2 * hour),
        EventRecord("edge", "buy", START - hour),
        EventRecord("edge", "refund", START - 3 * hour, {"amount": 11.0}),
        EventRecord("early", "buy", START - 2 * hour - tick),
        EventRecord("early", "buy", START - hour),
        EventRecord("early", "refund", START - 3 * hour - tick, {"amount": 11.0}),
    ]
    write_events(app, tenant, records, START)
    edge, _ = app.state.runtime.profiles.pids_for(tenant.workspace_id, ["edge", "early"])
    members = streaming_members(app, tenant, rules)
    assert (
        members == batch_members(app, tenant, START, rules) == {"two_buys": {edge}, "spent": {edge}}
    )


def test_rules_reading_no_attribute_evaluate_the_profiles_that_exist(
    app: FastAPI, tenant: Tenant
) -> None:
    """Without attributes to read, streaming reads only which profiles exist: a deleted one
    evaluated again stays out, one without any event read is evaluated."""
    rules = {"no_buys": "count(*) FILTER (WHERE event = 'buy') < 1"}
    streaming_audiences(tenant, rules)
    sweep(app, tenant, None, START)
    records = [EventRecord("buyer", "buy", START), EventRecord("viewer", "view", START)]
    write_events(app, tenant, records, START)
    engine = app.state.runtime.profiles
    buyer, viewer = engine.pids_for(tenant.workspace_id, ["buyer", "viewer"])
    assert streaming_members(app, tenant, rules) == {"no_buys": {viewer}}
    caller = Caller(tenant.workspace_id, tenant.slug, "k", Role.WRITE)
    with session_of(app) as session:
        profiles.delete(session, caller=caller, runtime=app.state.runtime, external_id="viewer")
    with session_of(app) as session:
        evaluation.on_profiles_written(
            session,
            runtime=app.state.runtime,
            workspace_id=tenant.workspace_id,
            pids=[buyer, viewer],
            now=START,
        )
    assert streaming_members(app, tenant, rules) == {"no_buys": set()}
    assert batch_members(app, tenant, START, rules) == {"no_buys": set()}


def test_the_sweep_moves_only_the_profiles_whose_events_crossed_a_boundary(
    app: FastAPI, tenant: Tenant
) -> None:
    rule = "count(*) FILTER (WHERE timestamp >= now() - INTERVAL 1 HOUR) >= 1"
    audience = make_audience(
        tenant.admin, key="hour", rule=rule, refresh_policy={"mode": "streaming"}
    )
    anytime = make_audience(
        tenant.admin, key="ever", rule="count(*) >= 1", refresh_policy={"mode": "streaming"}
    )
    t = START
    sweep(app, tenant, None, t)
    records = [
        EventRecord("early", "view", t),
        EventRecord("later", "view", t + timedelta(minutes=30)),
        EventRecord("old", "view", t - timedelta(hours=5)),
    ]
    write_events(app, tenant, records, t + timedelta(minutes=30))
    pids = dict(
        zip(
            ["early", "later", "old"],
            app.state.runtime.profiles.pids_for(tenant.workspace_id, ["early", "later", "old"]),
            strict=True,
        )
    )
    members = streaming_members_of(app, tenant, ["hour", "ever"])
    assert members["hour"] == {pids["early"], pids["later"]}
    assert members["ever"] == set(pids.values())
    # Nothing crosses a boundary before t + 1 hour: the sweep finds no profile.
    swept = sweep(app, tenant, t + timedelta(minutes=30), t + timedelta(minutes=59))
    assert set(swept.candidates) == set()
    # The early view leaves the window at t + 1 hour (its bound is included): only its
    # profile is evaluated again, and leaves; the later one stays.
    swept = sweep(app, tenant, t + timedelta(minutes=59), t + timedelta(minutes=61))
    assert set(swept.candidates) == {pids["early"]}
    members = streaming_members_of(app, tenant, ["hour", "ever"])
    assert members["hour"] == {pids["later"]}
    assert members["ever"] == set(pids.values())
    swept = sweep(app, tenant, t + timedelta(minutes=61), t + timedelta(hours=3))
    assert set(swept.candidates) == {pids["later"]}
    assert streaming_members_of(app, tenant, ["hour"])["hour"] == set()
    assert audience["evaluation_mode"]["mode"] == anytime["evaluation_mode"]["mode"] == "streaming"


def streaming_members_of(app: FastAPI, tenant: Tenant, keys: list[str]) -> dict[str, set[int]]:
    with session_of(app) as session:
        sets = compiled.member_sets(session, app.state.runtime, tenant.workspace_id, keys=keys)
    return {key: set(members) for key, members in sets.items()}


def test_the_sweep_scans_events_by_time_ranges(app: FastAPI, tenant: Tenant) -> None:
    """The engine query behind the sweep: pids with an event in any range, bounds included."""
    records = [EventRecord(f"q{n}", "view", START + timedelta(minutes=10 * n)) for n in range(6)]
    write_events(app, tenant, records, START + timedelta(hours=1))
    engine = app.state.runtime.profiles
    pids = engine.pids_for(tenant.workspace_id, [r.external_id for r in records])
    ranges = [
        (START + timedelta(minutes=10), START + timedelta(minutes=20)),
        (START + timedelta(minutes=45), START + timedelta(minutes=50)),
    ]
    found = engine.pids_with_events_between(tenant.workspace_id, ranges)
    assert set(found) == {pids[1], pids[2], pids[5]}
    assert set(engine.pids_with_events_between(tenant.workspace_id, [])) == set()
