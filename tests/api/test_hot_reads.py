"""Is-member and a profile's audiences answered from the process's caches never go stale
within the process: every write that changes the answer is seen by the next read."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI

from audiences.services.runtime import Runtime
from tests.factories import Tenant, make_audience


@pytest.fixture
def pro(tenant: Tenant) -> dict[str, Any]:
    """A streaming audience of the profiles on the pro plan."""
    return make_audience(
        tenant.write, name="pro", rule="plan = 'pro'", refresh_policy={"mode": "streaming"}
    )


def put_profile(tenant: Tenant, external_id: str, plan: str) -> None:
    response = tenant.write.put(f"/v1/profiles/{external_id}", json={"attributes": {"plan": plan}})
    assert response.status_code in (200, 201), response.text


def is_member(tenant: Tenant, audience_id: str, external_id: str) -> bool | int:
    """The answer twice (the second read is the one served from the caches), or the status."""
    answers = []
    for _ in range(2):
        response = tenant.read.get(f"/v1/audiences/{audience_id}/members/{external_id}")
        if response.status_code != 200:
            return response.status_code
        answers.append(response.json()["member"])
    assert answers[0] == answers[1]
    return bool(answers[0])


def audience_names(tenant: Tenant, external_id: str) -> list[str] | int:
    answers = []
    for _ in range(2):
        response = tenant.read.get(f"/v1/profiles/{external_id}/audiences")
        if response.status_code != 200:
            return response.status_code
        answers.append([a["name"] for a in response.json()["audiences"]])
    assert answers[0] == answers[1]
    return answers[0]


def test_second_reads_come_from_the_caches(
    app: FastAPI, tenant: Tenant, pro: dict[str, Any]
) -> None:
    runtime: Runtime = app.state.runtime
    put_profile(tenant, "p1", "pro")
    assert is_member(tenant, pro["id"], "p1") is True
    assert runtime.reads.audiences.get(pro["id"]) is not None
    assert runtime.known_pid(tenant.workspace_id, "p1") is not None


def test_is_member_follows_every_write_at_once(tenant: Tenant, pro: dict[str, Any]) -> None:
    put_profile(tenant, "p1", "pro")
    assert is_member(tenant, pro["id"], "p1") is True
    put_profile(tenant, "p1", "free")
    assert is_member(tenant, pro["id"], "p1") is False
    put_profile(tenant, "p1", "pro")
    assert is_member(tenant, pro["id"], "p1") is True
    assert tenant.write.delete("/v1/profiles/p1").status_code == 204
    assert is_member(tenant, pro["id"], "p1") == 404
    put_profile(tenant, "p1", "free")  # the same external id again: a new profile
    assert is_member(tenant, pro["id"], "p1") is False
    assert tenant.write.delete(f"/v1/audiences/{pro['id']}").status_code == 204
    assert is_member(tenant, pro["id"], "p1") == 404


def test_a_profiles_audiences_follow_every_write_at_once(
    tenant: Tenant, pro: dict[str, Any]
) -> None:
    put_profile(tenant, "p1", "pro")
    assert audience_names(tenant, "p1") == ["pro"]
    renamed = tenant.write.patch(
        f"/v1/audiences/{pro['id']}",
        json={"name": "pro plan"},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert renamed.status_code == 200, renamed.text
    assert audience_names(tenant, "p1") == ["pro plan"]
    make_audience(
        tenant.write,
        name="all pro",
        rule="plan IN ('pro', 'team')",
        refresh_policy={"mode": "streaming"},
    )
    put_profile(tenant, "p1", "pro")
    assert audience_names(tenant, "p1") == ["all pro", "pro plan"]
    put_profile(tenant, "p1", "free")
    assert audience_names(tenant, "p1") == []
    assert tenant.write.delete("/v1/profiles/p1").status_code == 204
    assert audience_names(tenant, "p1") == 404


def test_cached_answers_stay_in_their_workspace(
    tenant: Tenant, other_tenant: Tenant, pro: dict[str, Any]
) -> None:
    put_profile(tenant, "p1", "pro")
    put_profile(other_tenant, "p1", "pro")
    assert is_member(tenant, pro["id"], "p1") is True
    assert is_member(other_tenant, pro["id"], "p1") == 404
