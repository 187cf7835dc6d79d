"""Workspace settings over HTTP: strict attributes refuse what a workspace has not declared."""

from __future__ import annotations

from tests.factories import Tenant


def test_settings_are_read_by_anyone_and_changed_by_admins(tenant: Tenant) -> None:
    assert tenant.read.get("/v1/workspace/settings").json() == {
        "strict_attributes": False,
        "event_retention_days": None,
    }
    assert (
        tenant.write.put("/v1/workspace/settings", json={"strict_attributes": True}).status_code
        == 403
    )
    unknown = tenant.admin.put("/v1/workspace/settings", json={"strict": True})
    assert unknown.status_code == 422
    changed = tenant.admin.put("/v1/workspace/settings", json={"strict_attributes": True})
    assert changed.status_code == 200, changed.text
    assert changed.json() == {"strict_attributes": True, "event_retention_days": None}
    assert tenant.read.get("/v1/workspace/settings").json()["strict_attributes"] is True


def test_a_strict_workspace_refuses_undeclared_attributes_and_infers_nothing(
    tenant: Tenant,
) -> None:
    write, read = tenant.write, tenant.read
    strict = tenant.admin.put("/v1/workspace/settings", json={"strict_attributes": True})
    assert strict.status_code == 200
    refused = write.put("/v1/profiles/a", json={"attributes": {"age": 30, "color": "red"}})
    assert refused.status_code == 422
    assert refused.json()["code"] == "profile_invalid"
    assert [(e["code"], e["location"]) for e in refused.json()["errors"]] == [
        ("attribute_undeclared", ["attributes", "color"])
    ]
    assert read.get("/v1/profiles/a").status_code == 404
    assert "color" not in {a["name"] for a in read.get("/v1/attributes").json()}
    # Declared attributes (nested ones in either form) are written; null names nothing.
    assert tenant.admin.put("/v1/attributes/addr.city", json={"type": "string"}).status_code == 201
    ok = write.put(
        "/v1/profiles/a", json={"attributes": {"age": 30, "addr": {"city": "Paris"}, "gone": None}}
    )
    assert ok.status_code == 201, ok.text
    assert ok.json()["attributes"] == {"age": 30, "addr.city": "Paris"}
    batch = [
        {"id": "b", "attributes": {"age": 1}},
        {"id": "c", "attributes": {"addr": {"zip": "75001"}}},
    ]
    answer = write.post("/v1/profiles/batch", json={"profiles": batch})
    assert answer.status_code == 207
    assert [r["status"] for r in answer.json()["results"]] == [201, 422]
    problem = answer.json()["results"][1]["problem"]
    assert problem["errors"][0]["code"] == "attribute_undeclared"
    evaluated = read.post("/v1/evaluate", json={"attributes": {"color": "red"}})
    assert evaluated.status_code == 422
    assert evaluated.json()["errors"][0]["code"] == "attribute_undeclared"
    # Turned off again, the next write infers.
    assert (
        tenant.admin.put("/v1/workspace/settings", json={"strict_attributes": False}).status_code
        == 200
    )
    assert write.put("/v1/profiles/d", json={"attributes": {"color": "red"}}).status_code == 201
    assert read.get("/v1/attributes/color").json()["type"] == "string"


def test_settings_take_json_booleans_only(tenant: Tenant) -> None:
    for value in (1, "true", None):
        refused = tenant.admin.put("/v1/workspace/settings", json={"strict_attributes": value})
        assert (refused.status_code, refused.json()["code"]) == (422, "validation_failed"), value
    assert tenant.admin.get("/v1/workspace/settings").json()["strict_attributes"] is False
