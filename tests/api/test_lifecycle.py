"""What each lifecycle state allows (the table in docs/api.md): inactive and archived audiences
keep their members and are read as before, but nothing evaluates or writes them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI

from audiences.jobs import schedule
from audiences.kit.clock import utcnow
from audiences.services import static_members
from tests.client import ApiClient
from tests.factories import Tenant, make_audience, run_jobs

STREAMING = {"mode": "streaming"}
LIVE = [("draft", False), ("published", False)]
PARKED = [("inactive", False), ("draft", True), ("published", True), ("inactive", True)]
REFUSAL = {False: "audience_inactive", True: "audience_archived"}


def set_state(client: ApiClient, audience: dict[str, Any], state: str, archived: bool) -> None:
    response = client.patch(
        f"/v1/audiences/{audience['id']}",
        json={"lifecycle_state": state, "archived": archived},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert response.status_code == 200, response.text


def members(client: ApiClient, audience_id: str) -> set[str]:
    response = client.get(f"/v1/audiences/{audience_id}/export")
    assert response.status_code == 200, response.text
    return set(response.text.splitlines()[1:])


def put_profile(client: ApiClient, external_id: str, **attributes: Any) -> None:
    response = client.put(f"/v1/profiles/{external_id}", json={"attributes": attributes})
    assert response.status_code in (200, 201), response.text


def evaluations(client: ApiClient, audience_id: str) -> list[str]:
    """The states of the evaluation jobs of the audience."""
    response = client.get("/v1/jobs", params={"subject_id": audience_id, "kind": "evaluation"})
    assert response.status_code == 200, response.text
    return [job["state"] for job in response.json()["data"]]


def refresh_runs(client: ApiClient, audience_id: str) -> list[dict[str, Any]]:
    return list(client.get(f"/v1/audiences/{audience_id}/runs").json()["data"])


@pytest.mark.parametrize(("state", "archived"), LIVE + PARKED)
def test_streaming_follows_live_audiences_only(
    app: FastAPI, tenant: Tenant, state: str, archived: bool
) -> None:
    audience = make_audience(tenant.write, rule="age > 30", refresh_policy=STREAMING)
    put_profile(tenant.write, "before", age=40)
    assert members(tenant.read, audience["id"]) == {"before"}
    set_state(tenant.write, audience, state, archived)
    put_profile(tenant.write, "after", age=50)
    put_profile(tenant.write, "before", age=20)
    expected = {"after"} if (state, archived) in LIVE else {"before"}
    assert members(tenant.read, audience["id"]) == expected


@pytest.mark.parametrize(("state", "archived"), LIVE + PARKED)
def test_manual_refresh_is_refused_for_parked_audiences(
    tenant: Tenant, state: str, archived: bool
) -> None:
    dynamic = make_audience(tenant.write, lifecycle_state=state, archived=archived)
    static = make_audience(tenant.write, kind="static", lifecycle_state=state, archived=archived)
    for audience in (dynamic, static):
        response = tenant.write.post(f"/v1/audiences/{audience['id']}/refresh")
        if (state, archived) in LIVE:
            assert response.status_code == 202, response.text
        else:
            assert response.status_code == 409, response.text
            problem = response.json()
            assert problem["code"] == REFUSAL[archived]
            assert (problem["lifecycle_state"], problem["archived"]) == (state, archived)
            assert refresh_runs(tenant.read, audience["id"]) == []


@pytest.mark.parametrize(("state", "archived"), LIVE + PARKED)
def test_static_writes_and_imports_are_refused_for_parked_audiences(
    app: FastAPI, tenant: Tenant, state: str, archived: bool
) -> None:
    audience = make_audience(tenant.write, kind="static", lifecycle_state=state, archived=archived)
    url = f"/v1/audiences/{audience['id']}"
    attempts = [
        tenant.write.post(f"{url}/members", json={"action": "add", "ids": ["a"]}),
        tenant.write.post(
            f"{url}/members",
            json={"action": "add", "ids": ["b"]},
            headers={"Idempotency-Key": f"k-{audience['id']}"},
        ),
        tenant.write.post(
            f"{url}/imports", content=b"id\nc\n", headers={"Content-Type": "text/csv"}
        ),
    ]
    for response in attempts:
        if (state, archived) in LIVE:
            assert response.status_code == 202, response.text
        else:
            assert response.status_code == 409, response.text
            assert response.json()["code"] == REFUSAL[archived]
    run_jobs(app, static_members.WRITE_HANDLER, static_members.IMPORT_HANDLER)
    expected = {"a", "b", "c"} if (state, archived) in LIVE else set()
    assert members(tenant.read, audience["id"]) == expected


@pytest.mark.parametrize(("state", "archived"), PARKED)
def test_parked_lists_keep_their_members_readable(
    app: FastAPI, tenant: Tenant, state: str, archived: bool
) -> None:
    listed = make_audience(tenant.write, kind="static", key=f"list-{state}-{str(archived).lower()}")
    accepted = tenant.write.post(
        f"/v1/audiences/{listed['id']}/members", json={"action": "add", "ids": ["p1", "p2"]}
    )
    assert accepted.status_code == 202, accepted.text
    run_jobs(app, static_members.WRITE_HANDLER)
    set_state(tenant.write, listed, state, archived)
    url = f"/v1/audiences/{listed['id']}"
    assert members(tenant.read, listed["id"]) == {"p1", "p2"}
    assert tenant.read.get(f"{url}/members/p1").json()["member"] is True
    assert tenant.read.get(f"{url}/members").json()["total"] == 2
    assert tenant.read.get(f"{url}/changes").status_code == 200
    assert tenant.read.get(url).json()["size"] == 2
    # Other rules read its last members: a streaming audience keeps following profile writes.
    reader = make_audience(
        tenant.write, rule=f"in_audience('{listed['key']}') AND age > 30", refresh_policy=STREAMING
    )
    assert reader["evaluation_mode"]["mode"] == "streaming"
    put_profile(tenant.write, "p1", age=40)
    put_profile(tenant.write, "p3", age=40)
    assert members(tenant.read, reader["id"]) == {"p1"}
    # A preview stores nothing, so every state allows it.
    preview = tenant.read.post(f"{url}/preview", json={"rule": "age > 30"})
    assert preview.status_code == 200, preview.text


def test_a_streaming_rule_reads_a_parked_streaming_audience_as_it_was(
    app: FastAPI, tenant: Tenant
) -> None:
    older = make_audience(tenant.write, key="older", rule="age > 30", refresh_policy=STREAMING)
    reader = make_audience(
        tenant.write, rule="in_audience('older') AND plan = 'pro'", refresh_policy=STREAMING
    )
    put_profile(tenant.write, "p1", age=40, plan="pro")
    set_state(tenant.write, older, "inactive", False)
    put_profile(tenant.write, "p2", age=40, plan="pro")
    assert members(tenant.read, older["id"]) == {"p1"}
    assert members(tenant.read, reader["id"]) == {"p1"}


def test_scheduled_refresh_skips_parked_audiences(app: FastAPI, tenant: Tenant) -> None:
    hourly = {"mode": "scheduled", "interval_seconds": 3600}
    made = {
        (state, archived): make_audience(
            tenant.write, refresh_policy=hourly, lifecycle_state=state, archived=archived
        )
        for state, archived in LIVE + PARKED
    }
    for (state, archived), audience in made.items():
        shown = tenant.read.get(f"/v1/audiences/{audience['id']}").json()["evaluation"]
        assert (shown["next_refresh_at"] is None) == ((state, archived) in PARKED)
    with app.state.session_factory.begin() as session:
        queued = schedule.tick(session, now=utcnow() + timedelta(hours=2), slot_seconds=15)
    assert any(job.workspace_id == tenant.workspace_id for job in queued)
    run_jobs(app, schedule.REFRESH_DUE)
    for (state, archived), audience in made.items():
        triggers = [run["trigger"] for run in refresh_runs(tenant.read, audience["id"])]
        assert triggers == (["scheduled"] if (state, archived) in LIVE else [])


def test_parked_audiences_get_no_automatic_evaluation_and_catch_up_when_live(
    app: FastAPI, tenant: Tenant
) -> None:
    put_profile(tenant.write, "p1", age=40)
    audience = make_audience(tenant.write, rule="age > 30", lifecycle_state="inactive")
    changed = tenant.write.patch(
        f"/v1/audiences/{audience['id']}",
        json={"rule": "age > 35"},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert changed.status_code == 200, changed.text
    assert evaluations(tenant.read, audience["id"]) == [], "none for an inactive audience"
    run_jobs(app, "evaluation.run")
    assert members(tenant.read, audience["id"]) == set()
    set_state(tenant.write, audience, "published", False)
    assert evaluations(tenant.read, audience["id"]) == ["queued"]
    run_jobs(app, "evaluation.run")
    assert members(tenant.read, audience["id"]) == {"p1"}
    assert [r["trigger"] for r in refresh_runs(tenant.read, audience["id"])] == ["reactivated"]


def test_an_evaluation_queued_before_archiving_is_skipped(app: FastAPI, tenant: Tenant) -> None:
    put_profile(tenant.write, "p1", age=40)
    audience = make_audience(tenant.write, rule="age > 30")
    set_state(tenant.write, audience, "draft", True)
    run_jobs(app, "evaluation.run")
    assert members(tenant.read, audience["id"]) == set()
    assert refresh_runs(tenant.read, audience["id"]) == []


def test_a_json_write_after_earlier_writes_is_refused_once_parked(
    app: FastAPI, tenant: Tenant
) -> None:
    audience = make_audience(tenant.write, kind="static")
    url = f"/v1/audiences/{audience['id']}/members"
    assert tenant.write.post(url, json={"action": "add", "ids": ["a"]}).status_code == 202
    run_jobs(app, static_members.WRITE_HANDLER)
    set_state(tenant.write, audience, "inactive", False)
    response = tenant.write.post(url, json={"action": "add", "ids": ["b"]})
    assert response.status_code == 409, response.text
