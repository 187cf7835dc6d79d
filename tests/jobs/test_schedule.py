"""Scheduled refresh: the scheduler queues one job per workspace and slot, and the job refreshes
due audiences in dependency order; freshness follows the run history, failures retried sooner."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from fastapi import FastAPI
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from audiences.config import Settings
from audiences.jobs import schedule
from audiences.jobs.handlers import HANDLERS, HandlerRegistry
from audiences.jobs.worker import Worker
from audiences.kit.clock import utcnow
from audiences.store.tables import IdempotencyKeyRow, JobRow, RunRow
from tests.factories import Tenant, make_audience

HOURLY = {"mode": "scheduled", "interval_seconds": 3600}


def _profiles(tenant: Tenant, ages: dict[str, int]) -> None:
    records = [{"id": pid, "attributes": {"age": age}} for pid, age in ages.items()]
    assert tenant.write.post("/v1/profiles/batch", json={"profiles": records}).status_code == 200


def _run_jobs_until_done(
    app: FastAPI, settings: Settings, job_id: str, handler: str = schedule.REFRESH_DUE
) -> JobRow:
    # Only jobs of one handler: for the scheduled refresh, the audiences' own first evaluations
    # (queued when they were created) stay queued, so the audiences are still due.
    only_due = HandlerRegistry(
        {handler: HANDLERS.get(handler)}, needing_profiles=frozenset({handler})
    )
    worker = Worker(
        session_factory=app.state.session_factory,
        settings=settings,
        registry=only_due,
        runtime=app.state.runtime,
    )
    for _ in range(200):
        with app.state.session_factory() as session:
            job = session.get_one(JobRow, job_id)
            if job.state in ("succeeded", "failed", "cancelled"):
                return job
        assert worker.run_once(), "the job was not claimable"
    raise AssertionError("the job did not finish")


def _tick(app: FastAPI, **when: Any) -> list[JobRow]:
    with app.state.session_factory.begin() as session:
        return schedule.tick(session, now=utcnow() + timedelta(**when), slot_seconds=15)


def test_due_audiences_are_refreshed_in_dependency_order(
    app: FastAPI, settings: Settings, tenant: Tenant
) -> None:
    _profiles(tenant, {"a": 20, "b": 40, "c": 60})
    adults = make_audience(tenant.write, key="over-30", rule="age > 30", refresh_policy=HOURLY)
    seniors = make_audience(
        tenant.write,
        key="over-30-not-60",
        rule="in_audience('over-30') AND age < 60",
        refresh_policy=HOURLY,
    )
    jobs = [job for job in _tick(app) if job.workspace_id == tenant.workspace_id]
    assert len(jobs) == 1
    again = [job for job in _tick(app) if job.workspace_id == tenant.workspace_id]
    assert [job.id for job in again] == [jobs[0].id], "one job per workspace while it is active"

    finished = _run_jobs_until_done(app, settings, jobs[0].id)
    assert finished.state == "succeeded"
    members = {
        audience["key"]: {
            m["id"]
            for m in tenant.read.get(f"/v1/audiences/{audience['id']}/members").json()["data"]
        }
        for audience in (adults, seniors)
    }
    assert members == {"over-30": {"b", "c"}, "over-30-not-60": {"b"}}
    with app.state.session_factory() as session:
        runs = {
            run.audience_id: run
            for run in session.query(RunRow).filter(RunRow.trigger == "scheduled")
            if run.audience_id in (adults["id"], seniors["id"])
        }
    assert runs[adults["id"]].started_at <= runs[seniors["id"]].started_at
    shown = tenant.read.get(f"/v1/audiences/{adults['id']}").json()["evaluation"]
    assert shown["status"] == "succeeded"
    assert shown["consecutive_failures"] == 0
    assert shown["next_refresh_at"] > shown["last_refreshed_at"]
    assert [job for job in _tick(app) if job.workspace_id == tenant.workspace_id] == []
    later = [
        job for job in _tick(app, hours=1, minutes=1) if job.workspace_id == tenant.workspace_id
    ]
    assert len(later) == 1 and later[0].id != jobs[0].id


def test_failed_runs_are_retried_sooner_and_stay_visible(app: FastAPI, tenant: Tenant) -> None:
    audience = make_audience(tenant.write, rule="age > 1", refresh_policy=HOURLY)
    finished = utcnow() - timedelta(minutes=1)
    with app.state.session_factory.begin() as session:
        for number, status in enumerate(["succeeded", "failed", "failed"], start=1):
            session.add(
                RunRow(
                    workspace_id=tenant.workspace_id,
                    audience_id=audience["id"],
                    number=number,
                    trigger="scheduled",
                    status=status,
                    started_at=finished - timedelta(seconds=1),
                    finished_at=finished,
                    error="boom" if status == "failed" else None,
                )
            )
    shown = tenant.read.get(f"/v1/audiences/{audience['id']}").json()["evaluation"]
    assert shown["consecutive_failures"] == 2
    expected = finished + timedelta(minutes=2)
    assert shown["next_refresh_at"] == expected.isoformat().replace("+00:00", "Z")
    assert shown["last_refreshed_at"] is not None


def test_manual_and_parked_audiences_are_never_due(app: FastAPI, tenant: Tenant) -> None:
    make_audience(tenant.write, rule="age > 1")
    make_audience(tenant.write, rule="age > 2", refresh_policy=HOURLY, archived=True)
    make_audience(tenant.write, rule="age > 3", refresh_policy=HOURLY, lifecycle_state="inactive")
    assert [job for job in _tick(app) if job.workspace_id == tenant.workspace_id] == []


def test_intervals_below_the_minimum_are_refused(tenant: Tenant) -> None:
    body = {
        "key": "fast",
        "name": "fast",
        "kind": "dynamic",
        "rule": "age > 1",
        "refresh_policy": {"mode": "scheduled", "interval_seconds": 30},
    }
    assert tenant.write.post("/v1/audiences", json=body).status_code == 422


def test_a_new_or_changed_rule_queues_its_evaluation(
    app: FastAPI, settings: Settings, tenant: Tenant
) -> None:
    _profiles(tenant, {"x": 10, "y": 50})
    audience = make_audience(tenant.write, rule="age > 30")
    queued = tenant.read.get("/v1/jobs", params={"subject_id": audience["id"]}).json()["data"]
    assert [(job["handler"], job["state"]) for job in queued] == [("evaluation.run", "queued")]
    # Every dynamic audience any earlier test created queued its own evaluation, oldest first;
    # set those aside so the worker reaches this one (they belong to other workspaces).
    with app.state.session_factory.begin() as session:
        session.execute(
            update(JobRow)
            .where(JobRow.handler == "evaluation.run", JobRow.state == "queued")
            .where(JobRow.id != queued[0]["id"])
            .values(state="cancelled")
        )
    finished = _run_jobs_until_done(app, settings, queued[0]["id"], handler="evaluation.run")
    assert finished.state == "succeeded", finished.last_error
    members = tenant.read.get(f"/v1/audiences/{audience['id']}/members").json()
    assert [m["id"] for m in members["data"]] == ["y"]
    runs = tenant.read.get(f"/v1/audiences/{audience['id']}/runs").json()["data"]
    assert [run["trigger"] for run in runs] == ["rule_change"]
    body = {**{k: audience[k] for k in ("key", "name", "kind")}, "rule": "age < 30"}
    assert tenant.write.put(f"/v1/audiences/{audience['id']}", json=body).status_code == 200
    again = tenant.read.get(
        "/v1/jobs", params={"subject_id": audience["id"], "state": "queued"}
    ).json()
    assert again["total"] == 1


def test_housekeeping_purges_expired_idempotency_keys_once_an_hour(
    factory: sessionmaker[Session], job_settings: Settings, workspace_id: str
) -> None:
    now = utcnow()
    expired = now - timedelta(hours=job_settings.idempotency_ttl_hours, minutes=1)

    def add_key(key: str, created_at: datetime) -> None:
        with factory.begin() as session:
            session.add(
                IdempotencyKeyRow(
                    workspace_id=workspace_id, key=key, request_hash="h", created_at=created_at
                )
            )

    def keys() -> list[str]:
        with factory() as session:
            rows = session.scalars(
                select(IdempotencyKeyRow.key).where(IdempotencyKeyRow.workspace_id == workspace_id)
            )
            return sorted(rows)

    add_key("expired", expired)
    add_key("fresh", now)
    housekeeping = schedule.Housekeeping(factory, job_settings)
    housekeeping.run(now)
    assert keys() == ["fresh"]

    add_key("expired-later", expired)
    housekeeping.run(now + timedelta(minutes=10))
    assert keys() == ["expired-later", "fresh"]  # purged at most once an hour
    housekeeping.run(now + schedule.PURGE_EVERY)
    assert keys() == ["fresh"]
