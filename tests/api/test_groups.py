"""The audience-group resource: life cycle, include=audiences, delete refused while not empty."""

from __future__ import annotations

from tests.factories import Tenant, make_audience, make_group


def test_group_life_cycle(tenant: Tenant) -> None:
    response = tenant.write.post(
        "/v1/audience-groups", json={"name": "Age", "description": "Age cuts"}
    )
    assert response.status_code == 201
    group = response.json()
    assert response.headers["location"] == f"/v1/audience-groups/{group['id']}"
    assert response.headers["etag"] == '"1"'
    assert group["audience_count"] == 0
    url = f"/v1/audience-groups/{group['id']}"
    assert tenant.read.get(url).json() == group
    replaced = tenant.write.put(url, json={"name": "Ages"}, headers={"If-Match": '"1"'})
    assert replaced.status_code == 200
    assert replaced.json()["name"] == "Ages"
    assert replaced.json()["description"] is None
    assert replaced.json()["version"] == 2
    assert tenant.write.put(url, json={"name": "x"}, headers={"If-Match": '"1"'}).status_code == 412
    assert tenant.write.delete(url).status_code == 204
    assert tenant.read.get(url).status_code == 404


def test_duplicate_group_name_is_a_conflict(tenant: Tenant) -> None:
    make_group(tenant.write, name="Age")
    again = tenant.write.post("/v1/audience-groups", json={"name": "Age"})
    assert again.status_code == 409
    assert again.json()["code"] == "duplicate_name"
    other = make_group(tenant.write, name="Other")
    clash = tenant.write.put(f"/v1/audience-groups/{other['id']}", json={"name": "Age"})
    assert clash.status_code == 409


def test_include_audiences_lists_members_in_the_slim_shape(tenant: Tenant) -> None:
    group = make_group(tenant.write)
    first = make_audience(tenant.write, name="b", group_id=group["id"])
    second = make_audience(tenant.write, name="a", group_id=group["id"])
    make_audience(tenant.write)
    body = tenant.read.get(
        f"/v1/audience-groups/{group['id']}", params={"include": "audiences"}
    ).json()
    assert body["audience_count"] == 2
    assert body["audiences"] == [
        {"id": second["id"], "key": second["key"], "name": "a"},
        {"id": first["id"], "key": first["key"], "name": "b"},
    ]
    listed = tenant.read.get("/v1/audience-groups", params={"include": "audiences"}).json()
    assert listed["data"][0]["audiences"] == body["audiences"]
    assert "audiences" not in tenant.read.get(f"/v1/audience-groups/{group['id']}").json()


def test_delete_refused_while_the_group_holds_audiences(tenant: Tenant) -> None:
    group = make_group(tenant.write)
    member = make_audience(tenant.write, group_id=group["id"])
    url = f"/v1/audience-groups/{group['id']}"
    refused = tenant.write.delete(url)
    assert refused.status_code == 409
    problem = refused.json()
    assert problem["code"] == "group_not_empty"
    assert problem["audiences"] == [
        {"id": member["id"], "key": member["key"], "name": member["name"]}
    ]
    assert tenant.read.get(url).status_code == 200

    assert tenant.write.delete(url, params={"detach": "true"}).status_code == 204
    assert tenant.read.get(url).status_code == 404
    detached = tenant.read.get(f"/v1/audiences/{member['id']}").json()
    assert detached["group_id"] is None
    assert detached["version"] == member["version"] + 1


def test_group_validation(tenant: Tenant) -> None:
    for body in ({"name": ""}, {"name": "x" * 201}, {"name": "a", "owner": "me"}, {}):
        response = tenant.write.post("/v1/audience-groups", json=body)
        assert response.status_code == 422, body
    assert tenant.read.get("/v1/audience-groups").json()["total"] == 0
