"""Event retention: the scheduler queues one ``events.expire`` job per workspace with a
retention, once an hour, and the job drops the events older than it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import FastAPI

from audiences.jobs import schedule
from audiences.services import events
from tests.factories import Tenant
from tests.jobs.test_schedule import _run_jobs_until_done


def test_retention_drops_older_events_through_the_hourly_job(app: FastAPI, tenant: Tenant) -> None:
    now = datetime.now(UTC)
    batch = [
        {"profile_id": "u1", "event": "old", "timestamp": (now - timedelta(days=40)).isoformat()},
        {"profile_id": "u1", "event": "new", "timestamp": (now - timedelta(days=2)).isoformat()},
    ]
    assert tenant.write.post("/v1/events", json={"events": batch}).status_code == 201
    with app.state.session_factory.begin() as session:
        queued = schedule.queue_event_expiries(session, now=now)
    # The database is shared: other tests' workspaces may keep events for less.
    assert [job for job in queued if job.workspace_id == tenant.workspace_id] == []
    settings = {"strict_attributes": False, "event_retention_days": 30}
    assert tenant.admin.put("/v1/workspace/settings", json=settings).status_code == 200
    hour = now.replace(minute=0, second=0, microsecond=0)
    with app.state.session_factory.begin() as session:
        queued = schedule.queue_event_expiries(session, now=hour + timedelta(minutes=1))
        again = schedule.queue_event_expiries(session, now=hour + timedelta(minutes=59))
    mine = [job for job in queued if job.workspace_id == tenant.workspace_id]
    assert [job.id for job in mine] == [
        job.id for job in again if job.workspace_id == tenant.workspace_id
    ], "one job per workspace and hour, whoever asks"
    job = _run_jobs_until_done(app, app.state.settings, mine[0].id, events.EXPIRE_HANDLER)
    assert job.state == "succeeded" and job.result == {"dropped": 1}
    kept = tenant.read.get("/v1/profiles/u1/events").json()["data"]
    assert [e["event"] for e in kept] == ["new"]
