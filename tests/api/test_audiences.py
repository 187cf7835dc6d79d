"""The audience resource over HTTP: life cycle, validation, bulk-get."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI

from tests.factories import Tenant, audience_body, make_audience, make_group, run_jobs


def test_create_answers_201_with_location_etag_and_every_field(tenant: Tenant) -> None:
    body = audience_body(labels=["core", "q3"], metadata={"owner": "growth"})
    response = tenant.write.post("/v1/audiences", json=body)
    assert response.status_code == 201
    created = response.json()
    assert response.headers["location"] == f"/v1/audiences/{created['id']}"
    assert response.headers["etag"] == '"1"'
    assert created["version"] == 1
    assert {k: created[k] for k in body} == body
    assert created["lifecycle_state"] == "draft"
    assert created["archived"] is False
    assert created["refresh_policy"] == {"mode": "manual"}
    assert created["size"] is None
    assert created["evaluation"] == {
        "status": None,
        "computed_at": None,
        "last_error": None,
        "last_run_id": None,
        "last_refreshed_at": None,
        "next_refresh_at": None,
        "consecutive_failures": 0,
    }
    assert created["created_by"] == created["updated_by"]
    assert created["created_by"].startswith("api_key:")


def test_get_put_delete_life_cycle(tenant: Tenant) -> None:
    created = make_audience(tenant.write)
    url = f"/v1/audiences/{created['id']}"
    fetched = tenant.read.get(url)
    assert fetched.status_code == 200
    assert fetched.json() == created
    assert fetched.headers["etag"] == '"1"'

    replacement = audience_body(key=created["key"], name="Renamed", kind="static")
    replaced = tenant.write.put(url, json=replacement, headers={"If-Match": '"1"'})
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["name"] == "Renamed"
    assert replaced.json()["kind"] == "static"
    assert replaced.json()["rule"] is None
    assert replaced.json()["version"] == 2
    assert replaced.headers["etag"] == '"2"'
    assert replaced.json()["updated_at"] >= created["updated_at"]

    assert tenant.write.delete(url, headers={"If-Match": '"2"'}).status_code == 204
    gone = tenant.read.get(url)
    assert gone.status_code == 404
    assert gone.json()["code"] == "audience_not_found"


def test_put_with_identical_body_keeps_the_version(tenant: Tenant) -> None:
    created = make_audience(tenant.write)
    same = {k: created[k] for k in audience_body() | {"labels": 0, "metadata": 0}}
    response = tenant.write.put(f"/v1/audiences/{created['id']}", json=same)
    assert response.status_code == 200
    assert response.json()["version"] == 1


def test_stale_if_match_is_refused_and_changes_nothing(tenant: Tenant) -> None:
    created = make_audience(tenant.write)
    url = f"/v1/audiences/{created['id']}"
    body = audience_body(key=created["key"], name="Changed")
    response = tenant.write.put(url, json=body, headers={"If-Match": '"7"'})
    assert response.status_code == 412
    assert response.json()["code"] == "version_mismatch"
    assert tenant.read.get(url).json() == created
    garbage = tenant.write.put(url, json=body, headers={"If-Match": "nonsense"})
    assert garbage.status_code == 422
    weak = tenant.write.put(url, json=body, headers={"If-Match": 'W/"1"'})
    assert weak.status_code == 412  # If-Match compares strongly: a weak tag never matches
    assert weak.json()["code"] == "version_mismatch"
    assert tenant.write.put(url, json=body, headers={"If-Match": '"5", W/"1"'}).status_code == 412
    listed = tenant.write.put(url, json=body, headers={"If-Match": '"5", "1"'})
    assert listed.status_code == 200
    assert tenant.write.delete(url, headers={"If-Match": '"1"'}).status_code == 412
    assert tenant.read.get(url).json()["name"] == "Changed"


def test_if_match_star_matches_any_version(tenant: Tenant) -> None:
    created = make_audience(tenant.write)
    body = audience_body(key=created["key"], name="Starred")
    response = tenant.write.put(
        f"/v1/audiences/{created['id']}", json=body, headers={"If-Match": "*"}
    )
    assert response.status_code == 200
    assert response.json()["name"] == "Starred"


def test_duplicate_key_is_a_conflict(tenant: Tenant) -> None:
    created = make_audience(tenant.write)
    again = tenant.write.post("/v1/audiences", json=audience_body(key=created["key"]))
    assert again.status_code == 409
    assert again.json()["code"] == "duplicate_key"
    other = make_audience(tenant.write)
    renamed = audience_body(key=created["key"])
    clash = tenant.write.put(f"/v1/audiences/{other['id']}", json=renamed)
    assert clash.status_code == 409
    assert tenant.read.get(f"/v1/audiences/{other['id']}").json()["key"] == other["key"]


def test_same_key_in_another_workspace_is_fine(tenant: Tenant, other_tenant: Tenant) -> None:
    created = make_audience(tenant.write)
    assert (
        other_tenant.write.post("/v1/audiences", json=audience_body(key=created["key"])).status_code
        == 201
    )


@pytest.mark.parametrize(
    ("overrides", "location"),
    [
        ({"key": "Has Spaces"}, ["key"]),
        ({"name": ""}, ["name"]),
        ({"kind": "quantum"}, ["body"]),
        ({"kind": "dynamic", "rule": None}, ["rule"]),
        ({"kind": "static", "rule": "age > 3"}, ["rule"]),
        ({"kind": "dynamic", "ttl_days": 3}, ["ttl_days"]),
        ({"kind": "dynamic", "source": {"name": "crm"}}, ["source"]),
        ({"labels": ["a", "a"]}, ["labels"]),
        ({"labels": "core"}, ["labels"]),
        ({"refresh_policy": {"mode": "scheduled"}}, ["interval_seconds"]),
        ({"refresh_policy": {}}, ["refresh_policy"]),
        ({"refresh_policy": {"mode": "manual", "interval_seconds": 3600}}, ["interval_seconds"]),
        ({"kind": "static", "ttl_days": 0}, ["ttl_days"]),
        ({"id": "mine"}, ["id"]),
        ({"size": 10}, ["size"]),
        ({"version": 3}, ["version"]),
    ],
)
def test_invalid_bodies_get_422_naming_the_field(
    tenant: Tenant, overrides: dict[str, Any], location: list[str]
) -> None:
    response = tenant.write.post("/v1/audiences", json=audience_body(**overrides))
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "validation_failed"
    assert response.headers["content-type"] == "application/problem+json"
    named = [item for item in problem["errors"] if set(location) <= set(item["location"])]
    assert named, problem
    assert tenant.read.get("/v1/audiences").json()["total"] == 0


def test_malformed_json_is_400_and_wrong_content_type_415(tenant: Tenant) -> None:
    broken = tenant.write.post(
        "/v1/audiences", content=b'{"key": ', headers={"Content-Type": "application/json"}
    )
    assert broken.status_code == 400
    assert broken.json()["code"] == "malformed_json"
    as_text = tenant.write.post(
        "/v1/audiences", content=b"key=x", headers={"Content-Type": "text/plain"}
    )
    assert as_text.status_code == 415
    assert as_text.json()["code"] == "unsupported_media_type"
    assert tenant.read.get("/v1/audiences").json()["total"] == 0


def test_oversized_body_is_413(tenant: Tenant) -> None:
    huge = audience_body(metadata={"blob": "x" * 2_000_000})
    response = tenant.write.post("/v1/audiences", json=huge)
    assert response.status_code == 413
    assert response.json()["code"] == "body_too_large"
    assert tenant.read.get("/v1/audiences").json()["total"] == 0


def test_oversized_body_without_content_length_is_refused_while_streaming(tenant: Tenant) -> None:
    def chunks() -> Any:
        for _ in range(64):
            yield b"x" * 65536

    response = tenant.write.post(
        "/v1/audiences", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["code"] == "body_too_large"


def test_group_must_exist_in_the_workspace(tenant: Tenant, other_tenant: Tenant) -> None:
    foreign = make_group(other_tenant.write)
    response = tenant.write.post("/v1/audiences", json=audience_body(group_id=foreign["id"]))
    assert response.status_code == 422
    assert response.json()["code"] == "unknown_group"
    own = make_group(tenant.write)
    assert make_audience(tenant.write, group_id=own["id"])["group_id"] == own["id"]


def test_get_with_include_group_embeds_the_slim_group(tenant: Tenant) -> None:
    group = make_group(tenant.write, name="Lifecycle")
    created = make_audience(tenant.write, group_id=group["id"])
    plain = tenant.read.get(f"/v1/audiences/{created['id']}").json()
    assert "group" not in plain
    embedded = tenant.read.get(f"/v1/audiences/{created['id']}", params={"include": "group"})
    assert embedded.json()["group"] == {"id": group["id"], "name": "Lifecycle"}
    bad = tenant.read.get(f"/v1/audiences/{created['id']}", params={"include": "owner"})
    assert bad.status_code == 400
    assert bad.json()["code"] == "unknown_include"


def test_bulk_get_answers_207_with_a_status_per_id(tenant: Tenant, other_tenant: Tenant) -> None:
    first, second = make_audience(tenant.write), make_audience(tenant.write)
    foreign = make_audience(other_tenant.write)
    ids = [second["id"], "missing", first["id"], foreign["id"]]
    response = tenant.read.post("/v1/audiences/bulk-get", json={"ids": ids})
    assert response.status_code == 207
    results = response.json()["results"]
    assert [r["id"] for r in results] == ids
    assert [r["status"] for r in results] == [200, 404, 200, 404]
    assert results[0]["body"] == second
    assert results[2]["body"] == first
    assert results[1]["problem"]["code"] == "audience_not_found"


def test_bulk_get_refuses_more_than_the_limit(tenant: Tenant) -> None:
    response = tenant.read.post(
        "/v1/audiences/bulk-get", json={"ids": [f"id{i}" for i in range(101)]}
    )
    assert response.status_code == 422
    assert response.json()["code"] == "too_many_ids"
    empty = tenant.read.post("/v1/audiences/bulk-get", json={"ids": []})
    assert empty.status_code == 422


@pytest.mark.parametrize(
    "overrides",
    [
        {"name": "a\x00b"},
        {"labels": ["ok", "x\x00"]},
        {"metadata": {"k\x00": 1}},
        {"metadata": {"k": ["\x00"]}},
    ],
)
def test_nul_characters_are_refused_anywhere_in_the_body(
    tenant: Tenant, overrides: dict[str, Any]
) -> None:
    response = tenant.write.post("/v1/audiences", json=audience_body(**overrides))
    assert response.status_code == 422
    assert "NUL" in response.json()["errors"][0]["message"]
    assert tenant.read.get("/v1/audiences").json()["total"] == 0


def test_nul_in_query_path_or_header_is_refused(tenant: Tenant) -> None:
    assert tenant.read.get("/v1/audiences", params={"label": "a\x00"}).status_code == 422
    assert tenant.read.get("/v1/audiences/ab%00cd").status_code == 422


def test_blank_rule_is_a_rule_error(tenant: Tenant) -> None:
    response = tenant.write.post("/v1/audiences", json=audience_body(rule="  \n "))
    assert response.status_code == 422
    assert response.json()["code"] == "rule_invalid"
    assert response.json()["errors"][0]["location"] == ["body", "rule"]


@pytest.mark.parametrize(
    "overrides",
    [
        {"archived": 1},
        {"archived": "true"},
        {"kind": "static", "ttl_days": "30"},
        {"kind": "static", "ttl_days": True},
        {"refresh_policy": {"mode": "scheduled", "interval_seconds": "3600"}},
    ],
)
def test_json_types_are_not_coerced(tenant: Tenant, overrides: dict[str, Any]) -> None:
    response = tenant.write.post("/v1/audiences", json=audience_body(**overrides))
    assert response.status_code == 422, response.text


def test_integral_numbers_are_integers(tenant: Tenant) -> None:
    policy = {"mode": "scheduled", "interval_seconds": 3600.0}
    created = make_audience(tenant.write, refresh_policy=policy)
    assert created["refresh_policy"] == {"mode": "scheduled", "interval_seconds": 3600}


def test_metadata_numbers_must_fit_a_json_column(tenant: Tenant) -> None:
    """A 30-digit number in metadata is refused (it once failed the insert with a 500)."""
    edge = {"low": -(2**63), "high": 2**64 - 1, "nested": [{"n": 2**63}]}
    stored = make_audience(tenant.write, key="edges", metadata=edge)
    assert stored["metadata"] == edge
    too_big = audience_body(key="big", metadata={"n": 123456789012345678901234567890})
    response = tenant.write.post("/v1/audiences", json=too_big)
    assert (response.status_code, response.json()["code"]) == (422, "validation_failed")
    assert tenant.read.get("/v1/audiences", params={"key": "big"}).json()["data"] == []


def test_the_openapi_schema_states_the_metadata_number_range(tenant: Tenant) -> None:
    """So that clients and fuzzers send only what is stored (a 30-digit integer was valid)."""
    schemas = tenant.read.get("/openapi.json").json()["components"]["schemas"]
    metadata = schemas["StaticAudienceWrite"]["properties"]["metadata"]
    value = schemas[metadata["additionalProperties"]["$ref"].rsplit("/", 1)[1]]
    numbers = [option for option in value["anyOf"] if option.get("type") in ("number", "integer")]
    assert numbers == [{"type": "number", "minimum": -(2**63), "exclusiveMaximum": 2**64}]


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-1e400", b"1e300", b"-1e19"])
def test_metadata_numbers_must_be_finite(tenant: Tenant, number: bytes) -> None:
    """The standard library parses these; stored, they would become null."""
    body = b'{"key": "nan", "name": "n", "kind": "static", "metadata": {"x": %s}}' % number
    response = tenant.write.post(
        "/v1/audiences", content=body, headers={"Content-Type": "application/json"}
    )
    assert (response.status_code, response.json()["code"]) == (422, "validation_failed")


def _shown(client: Any, audience_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/audiences/{audience_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def _listed(client: Any, **params: Any) -> list[str]:
    response = client.get("/v1/audiences", params=params)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["data"]]


def test_members_changed_at_moves_with_the_members_not_the_definition(tenant: Tenant) -> None:
    client = tenant.write
    dynamic = make_audience(client, rule="age > 30")
    static = make_audience(client, kind="static")
    assert dynamic["members_changed_at"] == dynamic["created_at"]
    records = [{"id": "p1", "attributes": {"age": 40}}]
    assert client.post("/v1/profiles/batch", json={"profiles": records}).status_code == 200
    assert client.post(f"/v1/audiences/{dynamic['id']}/refresh").status_code == 202
    changed = _shown(client, dynamic["id"])
    moved = changed["members_changed_at"]
    assert moved > dynamic["created_at"]
    assert (changed["updated_at"], changed["version"]) == (dynamic["updated_at"], 1)
    # The definition did not change, so updated_since misses the list; the new filter finds it.
    assert _listed(client, updated_since=moved) == []
    assert _listed(client, members_changed_since=moved) == [dynamic["id"]]
    assert _listed(client, sort="-members_changed_at") == [dynamic["id"], static["id"]]
    assert _listed(client, sort="members_changed_at") == [static["id"], dynamic["id"]]
    first = client.get("/v1/audiences", params={"sort": "members_changed_at", "limit": 1}).json()
    rest = client.get(
        "/v1/audiences",
        params={"sort": "members_changed_at", "limit": 1, "cursor": first["next_cursor"]},
    ).json()
    assert [a["id"] for a in first["data"] + rest["data"]] == [static["id"], dynamic["id"]]
    # A run that changes nobody leaves the time where it was.
    assert client.post(f"/v1/audiences/{dynamic['id']}/refresh").status_code == 202
    assert _shown(client, dynamic["id"])["members_changed_at"] == moved
    bad = client.get("/v1/audiences", params={"members_changed_since": "yesterday"})
    assert bad.status_code in (400, 422), bad.text


def test_a_static_audience_shows_whether_its_writes_are_applied(
    app: FastAPI, tenant: Tenant
) -> None:
    static = make_audience(tenant.write, kind="static")
    dynamic = make_audience(tenant.write)
    assert (static["writes"], dynamic["writes"]) == ("applied", None)
    url = f"/v1/audiences/{static['id']}"
    accepted = tenant.write.post(f"{url}/members", json={"action": "add", "ids": ["a", "b"]})
    assert accepted.status_code == 202, accepted.text
    pending = _shown(tenant.read, static["id"])
    assert (pending["writes"], pending["members_changed_at"]) == (
        "in_progress",
        static["created_at"],
    )
    listed = tenant.read.get("/v1/audiences", params={"kind": "static"}).json()["data"]
    assert [a["writes"] for a in listed] == ["in_progress"]
    run_jobs(app, "membership.write")
    done = _shown(tenant.read, static["id"])
    assert (done["writes"], done["size"]) == ("applied", 2)
    assert done["members_changed_at"] > static["created_at"]


@pytest.mark.parametrize("interval", [5, 59])
def test_an_interval_under_the_floor_is_refresh_interval_too_short(
    tenant: Tenant, interval: int
) -> None:
    policy = {"mode": "scheduled", "interval_seconds": interval}
    created = tenant.write.post("/v1/audiences", json=audience_body(refresh_policy=policy))
    assert created.status_code == 422
    problem = created.json()
    assert problem["code"] == "refresh_interval_too_short"
    assert problem["errors"][0]["code"] == "refresh_interval_too_short"
    assert problem["errors"][0]["location"][-1] == "interval_seconds"
    audience = make_audience(tenant.write)
    patched = tenant.write.patch(
        f"/v1/audiences/{audience['id']}",
        json={"refresh_policy": policy},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert patched.status_code == 422
    assert patched.json()["code"] == "refresh_interval_too_short"
