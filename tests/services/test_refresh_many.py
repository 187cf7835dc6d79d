"""Batch refresh of several audiences at once (``evaluation.refresh_many``, what ``refresh_all``
runs): the same runs, members and history as refreshing each audience by itself."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyroaring import BitMap
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from audiences.errors import Conflict
from audiences.services import evaluation, memberships, run_history
from audiences.services.evaluation import batch as batch_mode
from audiences.store.tables import AudienceRow, RunRow
from tests.factories import Tenant, make_audience

COUNTRIES = ["US", "DE", "FR"]
PLANS = ["free", "pro", "team"]
RULES = [
    "country = 'US'",
    "age >= 30",
    "plan IN ('pro', 'team') AND NOT churned",
    "list_contains(tags, 'vip')",
    "ltv > 500 OR age IS NULL",
]
DEPENDENT = "in_audience('{key}') AND age < 50"
"""A rule on the first audience's members: refreshed after it in the same batch."""
OVERFLOW = "age * 9007199254740992 * 1024 > ltv"
"""Valid rule text that fails on DuckDB (the product overflows BIGINT)."""

profile = st.fixed_dictionaries(
    {
        "country": st.sampled_from(COUNTRIES),
        "age": st.none() | st.integers(min_value=18, max_value=80),
        "plan": st.sampled_from(PLANS),
        "churned": st.booleans(),
        "tags": st.lists(st.sampled_from(["vip", "new"]), max_size=2, unique=True),
        "ltv": st.floats(min_value=0, max_value=1000),
    }
)
steps = st.lists(st.dictionaries(st.integers(0, 24), profile, max_size=12), min_size=1, max_size=4)


def _write(tenant: Tenant, changes: dict[int, dict[str, Any]]) -> None:
    if changes:
        body = {"profiles": [{"id": f"p{n}", "attributes": a} for n, a in changes.items()]}
        response = tenant.write.post("/v1/profiles/batch", json=body)
        assert response.status_code == 200, response.text


def _audiences(tenant: Tenant, prefix: str) -> list[str]:
    """One manual audience per rule and the dependent one, ids in refresh order."""
    ids = []
    first = ""
    for n, rule in enumerate(RULES):
        key = f"{prefix}-{n}"
        body = make_audience(tenant.write, key=key, rule=rule, refresh_policy={"mode": "manual"})
        first = first or key
        ids.append(str(body["id"]))
    dependent = make_audience(
        tenant.write,
        key=f"{prefix}-dep",
        rule=DEPENDENT.format(key=first),
        refresh_policy={"mode": "manual"},
    )
    return [*ids, str(dependent["id"])]


def _rows(session: Session, ids: list[str]) -> list[AudienceRow]:
    found = {
        row.id: row for row in session.scalars(select(AudienceRow).where(AudienceRow.id.in_(ids)))
    }
    return [found[audience_id] for audience_id in ids]


def _together(app: FastAPI, ids: list[str]) -> list[RunRow]:
    factory: sessionmaker[Session] = app.state.session_factory
    with factory.begin() as session:
        return evaluation.refresh_many(
            session, runtime=app.state.runtime, audiences=_rows(session, ids), trigger="test"
        )


def _one_by_one(app: FastAPI, ids: list[str]) -> list[RunRow]:
    factory: sessionmaker[Session] = app.state.session_factory
    done = []
    for audience_id in ids:
        with factory.begin() as session:
            (row,) = _rows(session, [audience_id])
            done.append(
                evaluation.refresh(session, runtime=app.state.runtime, audience=row, trigger="test")
            )
    return done


def _summary(run: RunRow) -> tuple[Any, ...]:
    return (run.number, run.status, run.size, run.entered, run.exited, run.members_kept)


def _members(tenant: Tenant, audience_id: str, **params: Any) -> set[str]:
    found: set[str] = set()
    cursor = None
    while True:
        query = {"limit": 200, **params, **({"cursor": cursor} if cursor else {})}
        page = tenant.read.get(f"/v1/audiences/{audience_id}/members", params=query)
        assert page.status_code == 200, page.text
        body = page.json()
        found |= {item["id"] for item in body["data"]}
        cursor = body["next_cursor"]
        if not cursor:
            return found


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=steps, flush_bytes=st.sampled_from([0, batch_mode.FLUSH_BYTES]))
def test_a_batch_records_what_refreshing_one_by_one_records(
    app: FastAPI,
    tenant: Tenant,
    monkeypatch: pytest.MonkeyPatch,
    steps: list[dict[int, dict[str, Any]]],
    flush_bytes: int,
) -> None:
    # flush_bytes 0: every audience's result is flushed before the next one is evaluated.
    monkeypatch.setattr(batch_mode, "FLUSH_BYTES", flush_bytes)
    prefix = uuid.uuid4().hex[:10]
    together = _audiences(tenant, f"{prefix}-t")
    alone = _audiences(tenant, f"{prefix}-a")
    history: list[list[tuple[str, set[str]]]] = []
    for changes in steps:
        _write(tenant, changes)
        batch, single = _together(app, together), _one_by_one(app, alone)
        assert [_summary(run) for run in batch] == [_summary(run) for run in single]
        snapshot = []
        for run, twin, audience_id, twin_id in zip(batch, single, together, alone, strict=True):
            now = _members(tenant, audience_id)
            assert now == _members(tenant, twin_id)
            assert run.size == len(now)
            snapshot.append((run.id, now))
            assert twin.id != run.id
        history.append(snapshot)
    # Every run of the batch keeps its members (fewer than 20 runs): as of it, and changes since.
    for snapshot in history:
        for (run_id, then), audience_id, (_, now) in zip(
            snapshot, together, history[-1], strict=True
        ):
            assert _members(tenant, audience_id, as_of=run_id) == then
            changes = tenant.read.get(
                f"/v1/audiences/{audience_id}/changes", params={"since": run_id, "limit": 200}
            )
            assert changes.status_code == 200, changes.text
            moved = {(c["id"], c["change"]) for c in changes.json()["data"]}
            assert moved == {(i, "entered") for i in now - then} | {
                (i, "exited") for i in then - now
            }


def test_a_failing_rule_keeps_its_members_and_holds_back_no_other(
    app: FastAPI, tenant: Tenant
) -> None:
    _write(
        tenant,
        {n: {"country": COUNTRIES[n % 3], "age": 20 + n, "ltv": 10.0 * n} for n in range(30)},
    )
    ids = _audiences(tenant, "fail")
    first = _together(app, ids)
    assert all(run.status == "succeeded" for run in first)
    before = {audience_id: _members(tenant, audience_id) for audience_id in ids}
    broken = ids[1]
    audience = tenant.write.get(f"/v1/audiences/{broken}").json()
    body = {"key": audience["key"], "name": "x", "kind": "dynamic", "rule": OVERFLOW}
    assert tenant.write.put(f"/v1/audiences/{broken}", json=body).status_code == 200
    _write(tenant, {n: {"country": "US", "age": 31} for n in range(30, 40)})
    second = _together(app, ids)
    statuses = [run.status for run in second]
    assert statuses == ["succeeded", "failed", *["succeeded"] * (len(ids) - 2)]
    failed = second[1]
    assert failed.error and "out of range" in failed.error
    assert (failed.size, failed.members_kept, failed.number) == (None, False, 2)
    assert _members(tenant, broken) == before[broken]
    state = tenant.read.get(f"/v1/audiences/{broken}").json()["evaluation"]
    assert (state["status"], state["last_run_id"]) == ("failed", failed.id)
    us = ids[0]
    assert _members(tenant, us) == before[us] | {f"p{n}" for n in range(30, 40)}
    # The dependent audience (US and under 50: all of them here) read the first audience's
    # members of this batch, not those of the last.
    assert _members(tenant, ids[-1]) == _members(tenant, us)


def test_only_the_last_runs_of_each_audience_keep_their_members(
    app: FastAPI, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run_history, "SNAPSHOTS_KEPT", 3)
    _write(tenant, {n: {"country": "US", "age": 40} for n in range(5)})
    ids = _audiences(tenant, "prune")
    for _ in range(5):
        _together(app, ids)
    _one_by_one(app, ids[:2])  # a lone refresh prunes the same way
    factory: sessionmaker[Session] = app.state.session_factory
    with factory() as session:
        current = memberships.many(session, runtime=app.state.runtime, audience_ids=ids)
        for n, audience_id in enumerate(ids):
            runs = session.scalars(
                select(RunRow).where(RunRow.audience_id == audience_id).order_by(RunRow.number)
            ).all()
            total = 6 if n < 2 else 5
            assert [run.number for run in runs] == list(range(1, total + 1))
            assert [run.members_kept for run in runs] == [False] * (total - 3) + [True] * 3
            assert all((run.members is None) == (not run.members_kept) for run in runs)
            # Runs that found the same members (the stored base kept) still snapshot them.
            kept = [BitMap.deserialize(run.members) for run in runs if run.members is not None]
            assert kept == [current[audience_id]] * 3
        assert len(current[ids[0]]) == 5


def test_other_kinds_are_refused_before_anything_runs(app: FastAPI, tenant: Tenant) -> None:
    dynamic = make_audience(tenant.write, refresh_policy={"mode": "manual"})
    static = make_audience(tenant.write, kind="static")
    factory: sessionmaker[Session] = app.state.session_factory
    with factory.begin() as session:
        rows = _rows(session, [dynamic["id"], static["id"]])
        with pytest.raises(Conflict):
            evaluation.refresh_many(session, runtime=app.state.runtime, audiences=rows, trigger="t")
        assert (
            session.scalars(select(RunRow).where(RunRow.audience_id == dynamic["id"])).all() == []
        )
