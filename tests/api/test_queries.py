"""Exact query strings: every operation refuses parameters it does not have; single GETs
take ``fields=`` like their lists."""

from __future__ import annotations

from typing import Any

import pytest

from tests.factories import Tenant, make_audience, make_group


@pytest.fixture
def things(tenant: Tenant) -> dict[str, Any]:
    audience = make_audience(tenant.write, kind="static")
    group = make_group(tenant.write)
    run = tenant.write.post(f"/v1/audiences/{make_audience(tenant.write)['id']}/refresh")
    assert run.status_code == 202, run.text
    job = tenant.read.get("/v1/jobs", params={"limit": 1}).json()["data"][0]
    key = tenant.admin.get("/v1/api-keys", params={"limit": 1}).json()["data"][0]
    tenant.write.put("/v1/profiles/p1", json={"attributes": {"age": 3}})
    return {"audience": audience, "group": group, "run": run.json(), "job": job, "key": key}


def _single_gets(things: dict[str, Any]) -> list[str]:
    audience, run = things["audience"]["id"], things["run"]
    return [
        f"/v1/audiences/{audience}",
        f"/v1/audience-groups/{things['group']['id']}",
        f"/v1/jobs/{things['job']['id']}",
        f"/v1/api-keys/{things['key']['id']}",
        f"/v1/audiences/{run['audience_id']}/runs/{run['id']}",
        "/v1/attributes/age",
        "/v1/attributes",
        "/v1/profiles/p1",
        "/v1/profiles/p1/audiences",
        f"/v1/audiences/{audience}/members",
        f"/v1/audiences/{audience}/members/p1",
        f"/v1/audiences/{audience}/export",
        "/livez",
    ]


def test_unknown_query_parameters_are_refused_on_every_get(
    tenant: Tenant, things: dict[str, Any]
) -> None:
    for path in _single_gets(things):
        assert tenant.admin.get(path).status_code == 200, path
        response = tenant.admin.get(path, params={"feilds": "name"})
        assert response.status_code == 400, (path, response.text)
        problem = response.json()
        assert problem["code"] == "unknown_parameter", path
        assert "feilds" in problem["detail"]
        assert problem["errors"][0]["location"] == ["query", "feilds"]


def test_unknown_query_parameters_are_refused_on_writes_and_imports(
    tenant: Tenant, things: dict[str, Any]
) -> None:
    audience = things["audience"]
    calls = [
        (
            "POST",
            f"/v1/audiences/{audience['id']}/imports",
            {"content": b"id\na\n", "headers": {"Content-Type": "text/csv"}},
        ),
        ("PUT", f"/v1/audience-groups/{things['group']['id']}", {"json": {"name": "n"}}),
        ("POST", "/v1/audiences/preview", {"json": {"rule": "age > 1"}}),
        ("POST", f"/v1/audiences/{audience['id']}/refresh", {}),
        ("DELETE", f"/v1/audience-groups/{things['group']['id']}", {}),
    ]
    for method, path, kwargs in calls:
        response = tenant.admin.request(method, path, params={"mdoe": "replace"}, **kwargs)
        assert response.status_code == 400, (path, response.text)
        assert response.json()["code"] == "unknown_parameter"
    # Nothing was done: no import job, the group is still there.
    jobs = tenant.read.get("/v1/jobs", params={"subject_id": audience["id"]}).json()
    assert jobs["total"] == 0
    assert tenant.read.get(f"/v1/audience-groups/{things['group']['id']}").status_code == 200


def test_on_a_list_an_unknown_parameter_is_an_unknown_filter_naming_the_filters(
    tenant: Tenant,
) -> None:
    for path, filters in [
        ("/v1/audiences", "archived, group, id, key, kind, label, lifecycle_state"),
        ("/v1/audience-groups", "description, id, name"),
        ("/v1/jobs", "id, kind, state, subject_id"),
    ]:
        response = tenant.admin.get(path, params={"colour": "red"})
        assert response.status_code == 400
        problem = response.json()
        assert problem["code"] == "unknown_filter"
        assert "colour" in problem["detail"]
        assert filters in problem["detail"]


def test_single_gets_take_fields(tenant: Tenant, things: dict[str, Any]) -> None:
    audience, run = things["audience"], things["run"]
    cases = [
        (f"/v1/audiences/{audience['id']}", "name,key", {"name", "key"}),
        (f"/v1/audience-groups/{things['group']['id']}", "name", {"name"}),
        (f"/v1/jobs/{things['job']['id']}", "state,kind", {"state", "kind"}),
        (f"/v1/api-keys/{things['key']['id']}", "role", {"role"}),
        (f"/v1/audiences/{run['audience_id']}/runs/{run['id']}", "status", {"status"}),
    ]
    for path, fields, expected in cases:
        full = tenant.admin.get(path).json()
        sparse = tenant.admin.get(path, params={"fields": fields})
        assert sparse.status_code == 200, sparse.text
        assert sparse.json() == {k: v for k, v in full.items() if k in expected | {"id"}}
        unknown = tenant.admin.get(path, params={"fields": "name,secret"})
        assert unknown.status_code == 400
        assert unknown.json()["code"] == "unknown_fields"
    one = tenant.read.get(f"/v1/audiences/{audience['id']}", params={"fields": "version"})
    assert one.headers["etag"] == f'"{audience["version"]}"'


def test_query_parameters_are_checked_against_the_route_that_answers(tenant: Tenant) -> None:
    audience = make_audience(tenant.write, kind="static")
    listed = tenant.read.get("/v1/audiences", params={"include": "group", "id": audience["id"]})
    assert listed.status_code == 200
    one = tenant.read.get(f"/v1/audiences/{audience['id']}", params={"include": "group"})
    assert one.status_code == 200
    assert one.json()["group"] is None
