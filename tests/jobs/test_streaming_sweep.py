"""The streaming sweep as a scheduled job: one ``evaluation.sweep`` per workspace with
streaming behavioural audiences per interval; the first refreshes them in batch, each later
one starts where the previous ended."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import FastAPI

from audiences.jobs import schedule
from audiences.services import evaluation
from tests.factories import Tenant, make_audience
from tests.jobs.test_schedule import _run_jobs_until_done

RULE = "count(*) FILTER (WHERE timestamp >= now() - INTERVAL 1 HOUR) >= 1"


def _queue(app: FastAPI, tenant: Tenant, now: datetime) -> list[str]:
    with app.state.session_factory.begin() as session:
        queued = schedule.queue_sweeps(session, now=now, sweep_seconds=10)
    return [job.id for job in queued if job.workspace_id == tenant.workspace_id]


def test_sweeps_are_queued_per_interval_and_chain_their_periods(
    app: FastAPI, tenant: Tenant
) -> None:
    now = datetime.now(UTC)
    make_audience(tenant.admin, rule="age > 3", refresh_policy={"mode": "streaming"})
    assert _queue(app, tenant, now) == [], "no behavioural streaming audience, no sweep"
    made = make_audience(tenant.admin, rule=RULE, refresh_policy={"mode": "streaming"})
    event = {"profile_id": "v", "event": "view", "timestamp": now.isoformat()}
    assert tenant.write.post("/v1/events", json=event).status_code == 201
    first = _queue(app, tenant, now)
    assert len(first) == 1 and _queue(app, tenant, now + timedelta(seconds=1)) == first
    job = _run_jobs_until_done(app, app.state.settings, first[0], evaluation.SWEEP_HANDLER)
    assert job.state == "succeeded", job.last_error
    assert job.result["since"] is None and job.result["refreshed"] == 1
    first_until = job.result["until"]
    second = _queue(app, tenant, now + timedelta(seconds=20))
    assert second != first
    job = _run_jobs_until_done(app, app.state.settings, second[0], evaluation.SWEEP_HANDLER)
    assert job.state == "succeeded", job.last_error
    assert job.result["since"] == first_until, "each sweep starts where the last one ended"
    assert datetime.fromisoformat(first_until) <= datetime.fromisoformat(job.result["until"])
    member = tenant.read.get(f"/v1/audiences/{made['id']}/members/v").json()["member"]
    assert member is True


def test_finished_sweeps_are_pruned_after_an_hour(app: FastAPI, tenant: Tenant) -> None:
    now = datetime.now(UTC)
    make_audience(tenant.admin, rule=RULE, refresh_policy={"mode": "streaming"})
    (queued,) = _queue(app, tenant, now - timedelta(hours=3))
    job = _run_jobs_until_done(app, app.state.settings, queued, evaluation.SWEEP_HANDLER)
    assert job.state == "succeeded", job.last_error
    with app.state.session_factory.begin() as session:
        assert evaluation.last_until(session, tenant.workspace_id) is not None
        assert evaluation.prune(session, now=now) == 0, "finished just now: kept"
        assert evaluation.prune(session, now=now + timedelta(hours=2)) >= 1
        # With no sweep left, the next one refreshes in batch (exact) instead.
        assert evaluation.last_until(session, tenant.workspace_id) is None
