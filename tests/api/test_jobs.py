"""The job resource: read, list conventions, cancel, roles, and the shape of progress."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi import FastAPI

from audiences import queue
from tests.factories import Tenant


@pytest.fixture
def handler() -> str:
    """A handler name of this test alone, so no other test's claim takes its jobs."""
    return f"tests.api_{uuid.uuid4().hex[:12]}"


def make_job(app: FastAPI, tenant: Tenant, handler: str, **options: Any) -> str:
    """Queue a job in the tenant's workspace, as a service would; its id."""
    options.setdefault("kind", "evaluation")
    with app.state.session_factory.begin() as session:
        row = queue.enqueue(session, workspace_id=tenant.workspace_id, handler=handler, **options)
        return row.id


def run_to_checkpoint(app: FastAPI, handler: str, **checkpoint: Any) -> queue.ClaimedJob:
    """Claim the handler's next job and save one checkpoint, as a worker would."""
    with app.state.session_factory.begin() as session:
        job = queue.claim(session, owner="api-test", lease_seconds=60, handlers={handler})
        assert job is not None
        queue.checkpoint(session, job=job, lease_seconds=60, **checkpoint)
    return job


def test_a_job_shows_state_progress_counts_and_errors(
    app: FastAPI, tenant: Tenant, handler: str
) -> None:
    job_id = make_job(app, tenant, handler, subject_id="aud-1", payload={"audience": "aud-1"})
    queued = tenant.read.get(f"/v1/jobs/{job_id}")
    assert queued.status_code == 200
    body = queued.json()
    assert (body["state"], body["kind"], body["handler"]) == ("queued", "evaluation", handler)
    assert body["progress"] == {"processed": 0, "total": None, "percent": None}
    assert (body["attempts"], body["max_attempts"], body["started_at"]) == (0, 3, None)
    run_to_checkpoint(
        app,
        handler,
        processed=250,
        total=1000,
        counts={"entered": 200, "exited": 50},
        errors=[{"code": "item_failed", "message": "bad", "row": 3, "attempt": 1}],
    )
    running = tenant.read.get(f"/v1/jobs/{job_id}").json()
    assert running["state"] == "running"
    assert running["progress"] == {"processed": 250, "total": 1000, "percent": 25.0}
    assert running["counts"] == {"entered": 200, "exited": 50}
    assert running["errors"] == [{"code": "item_failed", "message": "bad", "row": 3, "attempt": 1}]
    assert (running["error_count"], running["attempts"]) == (1, 1)
    assert running["started_at"] is not None


def test_cancel_a_queued_job_then_a_finished_one_is_a_conflict(
    app: FastAPI, tenant: Tenant, handler: str
) -> None:
    job_id = make_job(app, tenant, handler)
    url = f"/v1/jobs/{job_id}/cancel"
    assert tenant.read.post(url).status_code == 403
    cancelled = tenant.write.post(url)
    assert cancelled.status_code == 200
    assert cancelled.json()["state"] == "cancelled"
    assert cancelled.json()["finished_at"] is not None
    again = tenant.write.post(url)
    assert again.status_code == 409
    assert again.json()["code"] == "job_finished"


def test_cancel_a_running_job_asks_it_to_stop(app: FastAPI, tenant: Tenant, handler: str) -> None:
    job_id = make_job(app, tenant, handler)
    job = run_to_checkpoint(app, handler, processed=1)
    asked = tenant.write.post(f"/v1/jobs/{job_id}/cancel").json()
    assert (asked["state"], asked["cancel_requested"]) == ("running", True)
    with app.state.session_factory.begin() as session:
        assert queue.heartbeat(session, job=job, lease_seconds=60) is True
        queue.cancelled(session, job=job)
    assert tenant.read.get(f"/v1/jobs/{job_id}").json()["state"] == "cancelled"


def test_list_filters_and_sorts(app: FastAPI, tenant: Tenant, handler: str) -> None:
    first = make_job(app, tenant, handler, subject_id="aud-1")
    second = make_job(app, tenant, handler, kind="import", subject_id="aud-2")
    third = make_job(app, tenant, handler, kind="export")
    tenant.write.post(f"/v1/jobs/{third}/cancel")

    def ids(**params: Any) -> list[str]:
        response = tenant.read.get("/v1/jobs", params=params)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["data"]]

    assert ids() == [first, second, third]
    assert ids(sort="-created_at") == [third, second, first]
    assert ids(sort="-updated_at")[0] == third
    assert ids(kind="import") == [second]
    assert ids(state="cancelled") == [third]
    assert ids(state="queued", subject_id="aud-1") == [first]
    assert ids(q=handler.upper()) == [first, second, third]
    sparse = tenant.read.get("/v1/jobs", params={"fields": "state", "limit": 1}).json()
    assert sparse["data"] == [{"id": first, "state": "queued"}]
    assert sparse["has_more"] is True


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"state": "done"}, "validation_failed"),
        ({"sort": "name"}, "unknown_sort_field"),
        ({"fields": "secret"}, "unknown_fields"),
        ({"worker": "w1"}, "unknown_filter"),
    ],
)
def test_list_refuses_what_it_does_not_have(
    tenant: Tenant, params: dict[str, str], code: str
) -> None:
    response = tenant.read.get("/v1/jobs", params=params)
    assert response.status_code in (400, 422)
    assert response.json()["code"] == code


def test_unknown_and_foreign_jobs_answer_404(
    app: FastAPI, tenant: Tenant, other_tenant: Tenant, handler: str
) -> None:
    job_id = make_job(app, tenant, handler)
    for client, url in (
        (other_tenant.read, f"/v1/jobs/{job_id}"),
        (other_tenant.write, f"/v1/jobs/{job_id}/cancel"),
        (tenant.read, "/v1/jobs/no-such-job"),
    ):
        response = client.request("POST" if url.endswith("cancel") else "GET", url)
        assert response.status_code == 404
        assert response.json()["code"] == "job_not_found"
    assert tenant.read.get(f"/v1/jobs/{job_id}").json()["state"] == "queued"
