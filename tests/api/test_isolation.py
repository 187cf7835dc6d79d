"""Tenancy: another workspace's resources answer 404 on every route and method, never 403 or 2xx.

The matrix is built from the app's OpenAPI paths, so a new route with a path parameter is
covered automatically (or fails here until the test knows what id to put in it).
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI

from audiences import queue
from audiences.services import messages
from audiences.store.tables import DestinationRow
from tests.factories import Tenant, audience_body, make_audience, make_group

BODIES: dict[str, dict[str, Any]] = {
    "PUT": {"json": audience_body()},
    "PATCH": {
        "json": {"name": "stolen"},
        "headers": {"Content-Type": "application/merge-patch+json"},
    },
    "POST": {"json": {}},
    "DELETE": {},
    "GET": {},
}
PUT_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("PUT", "/v1/audience-groups/{group_id}"): {"json": {"name": "stolen"}},
    ("PUT", "/v1/attributes/{name}"): {"json": {"type": "string"}},
    ("PUT", "/v1/event-properties/{name}"): {"json": {"type": "string"}},
    ("PUT", "/v1/profiles/{profile_id}"): {"json": {"attributes": {"country": "FR"}}},
    ("POST", "/v1/audiences/{audience_id}/preview"): {"json": {"rule": "age > 1"}},
    ("GET", "/v1/audiences/{audience_id}/changes"): {"params": {"since": "none"}},
    ("PUT", "/v1/destinations/{destination_id}"): {
        "json": {
            "name": "stolen",
            "kind": "webhook",
            "url": "https://stolen.example.com/",
            "subscription": {"all": True},
        }
    },
    ("POST", "/v1/destinations/{destination_id}/redeliver"): {
        "json": {"since": "2020-01-01T00:00:00Z"}
    },
    ("POST", "/v1/audiences/{audience_id}/members"): {"json": {"action": "add", "ids": ["a"]}},
    ("POST", "/v1/audiences/{audience_id}/imports"): {
        "content": b"id\na\n",
        "headers": {"Content-Type": "text/csv"},
    },
}
UPSERTS = {
    ("PUT", "/v1/attributes/{name}"),
    ("PUT", "/v1/event-properties/{name}"),
    ("PUT", "/v1/profiles/{profile_id}"),
}
"""Routes where the client names the resource: another workspace's name creates one's own."""


def _victim_ids(app: FastAPI, victim: Tenant) -> dict[str, str]:
    group = make_group(victim.write)
    audience = make_audience(victim.write, group_id=group["id"])
    assert (
        victim.write.put("/v1/attributes/secret_score", json={"type": "float"}).status_code == 201
    )
    profile = victim.write.put(
        "/v1/profiles/victim-1", json={"attributes": {"country": "US", "age": 40}}
    )
    assert profile.status_code == 201
    event = {"profile_id": "victim-1", "event": "order", "properties": {"secret_score": 1.5}}
    assert victim.write.post("/v1/events", json=event).status_code == 201
    run = victim.write.post(f"/v1/audiences/{audience['id']}/refresh").json()
    key = victim.admin.get("/v1/api-keys").json()["data"][0]
    destination = victim.write.post(
        "/v1/destinations",
        json={
            "name": "victim",
            "kind": "webhook",
            "url": "https://victim.example.com/hooks",
            "subscription": {"audience_ids": [audience["id"]]},
        },
    ).json()
    with app.state.session_factory.begin() as session:
        job = queue.enqueue(
            session, workspace_id=victim.workspace_id, kind="export", handler="tests.isolation"
        )
        # A logged message to aim at (a test message would send one across the network).
        row = session.get_one(DestinationRow, destination["id"])
        delivery, _ = messages.add_message(
            session, row, messages.TEST, {}, 0, None, status="failed"
        )
    return {
        "audience_id": audience["id"],
        "group_id": group["id"],
        "key_id": key["id"],
        "job_id": job.id,
        "name": "secret_score",
        "profile_id": "victim-1",
        "run_id": run["id"],
        "destination_id": destination["id"],
        "delivery_id": delivery.id,
    }


def _routes_with_ids(app: FastAPI) -> list[tuple[str, str]]:
    paths = app.openapi()["paths"]
    found = [
        (method.upper(), path)
        for path, operations in paths.items()
        if "{" in path
        for method in operations
    ]
    # Upserts last: once one has created the attacker's own "victim-1", the other routes would
    # find that one instead of answering 404.
    return sorted(found, key=lambda route: route in UPSERTS)


def test_every_route_answers_404_for_another_workspaces_ids(
    app: FastAPI, tenant: Tenant, other_tenant: Tenant
) -> None:
    ids = _victim_ids(app, tenant)
    before = {path: tenant.admin.get(path).json() for path in _victim_urls(ids)}
    routes = _routes_with_ids(app)
    assert len(routes) >= 10
    outcomes = []
    for method, template in routes:
        params = re.findall(r"{(\w+)}", template)
        missing = [p for p in params if p not in ids]
        assert not missing, f"teach this test an id for {missing} in {template}"
        url = template.format(**ids)
        body = PUT_BODIES.get((method, template), BODIES[method])
        response = other_tenant.admin.request(method, url, **body)
        expected = 201 if (method, template) in UPSERTS else 404
        outcomes.append((method, url, response.status_code, expected))
    wrong = [o for o in outcomes if o[2] != o[3]]
    assert wrong == []
    assert {path: tenant.admin.get(path).json() for path in _victim_urls(ids)} == before


def test_lists_and_bulk_get_show_nothing_of_another_workspace(
    app: FastAPI, tenant: Tenant, other_tenant: Tenant
) -> None:
    ids = _victim_ids(app, tenant)
    for path in (
        "/v1/audiences",
        "/v1/audience-groups",
        "/v1/api-keys",
        "/v1/jobs",
        "/v1/destinations",
    ):
        seen = other_tenant.admin.get(path, params={"limit": 200}).json()["data"]
        assert set(ids.values()).isdisjoint(item["id"] for item in seen)
    bulk = other_tenant.admin.post(
        "/v1/audiences/bulk-get", json={"ids": [ids["audience_id"]]}
    ).json()
    assert [r["status"] for r in bulk["results"]] == [404]
    filtered = other_tenant.admin.get("/v1/audiences", params={"group": ids["group_id"]}).json()
    assert filtered["total"] == 0


def test_another_workspaces_group_cannot_be_joined(
    app: FastAPI, tenant: Tenant, other_tenant: Tenant
) -> None:
    ids = _victim_ids(app, tenant)
    response = other_tenant.write.post(
        "/v1/audiences", json=audience_body(group_id=ids["group_id"])
    )
    assert response.status_code == 422


def _victim_urls(ids: dict[str, str]) -> list[str]:
    return [
        f"/v1/attributes/{ids['name']}",
        f"/v1/profiles/{ids['profile_id']}",
        f"/v1/profiles/{ids['profile_id']}/events",
        f"/v1/event-properties/{ids['name']}",
        f"/v1/audiences/{ids['audience_id']}/runs/{ids['run_id']}",
        f"/v1/audiences/{ids['audience_id']}",
        f"/v1/audience-groups/{ids['group_id']}",
        f"/v1/api-keys/{ids['key_id']}",
        f"/v1/jobs/{ids['job_id']}",
        f"/v1/destinations/{ids['destination_id']}",
        f"/v1/destinations/{ids['destination_id']}/deliveries/{ids['delivery_id']}",
    ]
