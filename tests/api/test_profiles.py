"""Profiles over HTTP: upserts and merges, the attribute schema (declared, inferred, extra), batches
with per-record errors, limits, reads and erasure."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI

from audiences.engines.base import RESERVED_COLUMNS
from audiences.schemas.api_keys import Role
from tests.client import ApiClient
from tests.factories import Tenant, client_for, mint_key
from tests.oracle import refresh


@pytest.fixture
def bare(app: FastAPI) -> Iterator[ApiClient]:
    """A write client of a fresh workspace that declares no attribute."""
    token, _ = mint_key(app, f"bare-{uuid.uuid4().hex[:12]}", Role.WRITE)
    client = client_for(app, token)
    yield client
    client.close()


FIRST = {
    "country": "US",
    "age": 30,
    "score": 1.5,
    "vip": True,
    "tags": ["a", "b"],
    "scores": [1, 2.5],
    "signup": "2024-01-02",
    "seen": "2024-01-02T03:04:05+02:00",
    "prefs": {"theme": "dark"},
    "mixed": [1, "a"],
    "nothing": None,
    "empty": [],
    "Bad Name": "kept aside",
}


def _types(client: ApiClient) -> dict[str, str]:
    return {a["name"]: a["type"] for a in client.get("/v1/attributes").json()}


def test_first_ingest_infers_the_schema_from_the_first_values(bare: ApiClient) -> None:
    later = {"country": "FR", "age": "41", "score": 2, "newcomer": "x"}
    response = bare.post(
        "/v1/profiles/batch",
        json={"profiles": [{"id": "p1", "attributes": FIRST}, {"id": "p2", "attributes": later}]},
    )
    assert response.status_code == 200, response.text
    assert _types(bare) == {
        "country": "string",
        "age": "integer",
        "score": "float",
        "vip": "boolean",
        "tags": "string_list",
        "scores": "number_list",
        "signup": "date",
        "seen": "timestamp",
        "prefs.theme": "string",
        "mixed": "json",
        "newcomer": "string",
    }
    assert all(a["inferred"] for a in bare.get("/v1/attributes").json())
    stored = bare.get("/v1/profiles/p1").json()
    assert stored["id"] == "p1"
    assert stored["updated_at"]
    assert stored["attributes"] == {
        "country": "US",
        "age": 30,
        "score": 1.5,
        "vip": True,
        "tags": ["a", "b"],
        "scores": [1.0, 2.5],
        "signup": "2024-01-02",
        "seen": "2024-01-02T01:04:05Z",
        "prefs.theme": "dark",
        "mixed": [1, "a"],
        "empty": [],
        "Bad Name": "kept aside",
    }
    assert bare.get("/v1/profiles/p2").json()["attributes"] == {
        "country": "FR",
        "age": 41,
        "score": 2.0,
        "newcomer": "x",
    }


def _members(client: ApiClient, audience_id: str) -> list[str]:
    page = client.get(f"/v1/audiences/{audience_id}/members", params={"limit": 100}).json()
    return sorted(m["id"] for m in page["data"])


def _streaming(client: ApiClient, rule: str) -> str:
    body = {
        "key": f"s-{uuid.uuid4().hex[:8]}",
        "name": rule,
        "kind": "dynamic",
        "rule": rule,
        "refresh_policy": {"mode": "streaming"},
    }
    response = client.post("/v1/audiences", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_attributes_are_inferred_whenever_they_first_get_a_telling_value(tenant: Tenant) -> None:
    """Issue #11: an attribute first seen in a later write, after declarations by hand, or
    first seen empty or null, is usable in rules as soon as a value with a type arrives."""
    write, read = tenant.write, tenant.read
    assert (
        write.put("/v1/profiles/a", json={"attributes": {"color": "red", "age": 40}}).status_code
        == 201
    )
    types = _types(read)
    assert types["color"] == "string", "a later write infers too, beside declared attributes"
    assert read.get("/v1/attributes/color").json()["inferred"] is True
    refused = write.put("/v1/profiles/b", json={"attributes": {"color": 5}})
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["code"] == "attribute_type_mismatch"

    # null and [] decide nothing: the name waits for a value that does.
    first = {"badges": [], "nickname": None}
    assert write.put("/v1/profiles/b", json={"attributes": first}).status_code == 201
    assert "badges" not in _types(read) and "nickname" not in _types(read)
    assert read.get("/v1/profiles/b").json()["attributes"] == {"badges": []}
    batch = [{"id": "c", "attributes": {"badges": ["gold"], "nickname": "cc"}}]
    assert write.post("/v1/profiles/batch", json={"profiles": batch}).status_code == 200
    assert {k: v for k, v in _types(read).items() if k in first} == {
        "badges": "string_list",
        "nickname": "string",
    }
    # The empty list stored before moved into the new column: batch and streaming agree on it.
    has = _streaming(write, "badges IS NOT NULL")
    golden = _streaming(write, "list_contains(badges, 'gold') OR color = 'red'")
    for profile in ("a", "b", "c"):
        assert write.put(f"/v1/profiles/{profile}", json={"attributes": {}}).status_code == 200
    streamed = {has: _members(read, has), golden: _members(read, golden)}
    assert streamed == {has: ["b", "c"], golden: ["a", "c"]}
    for audience_id, members in streamed.items():
        assert refresh(write, audience_id)["size"] == len(members)
        assert _members(read, audience_id) == members
        preview = read.post("/v1/audiences/preview", json={"rule": "badges IS NOT NULL"})
        assert preview.json()["size"] == 2


def test_nested_attributes_mean_the_same_in_both_write_forms(tenant: Tenant) -> None:
    """Issue #11: with ``addr.city`` declared, a nested write and a dotted one are matched
    alike by streaming, preview, refresh, is-member (with its explanation) and evaluate."""
    write, read = tenant.write, tenant.read
    assert tenant.admin.put("/v1/attributes/addr.city", json={"type": "string"}).status_code == 201
    rule = "addr.city = 'Paris' AND addr.city IS NOT NULL"
    paris = _streaming(write, "addr.city = 'Paris'")
    writes = {
        "nested": {"addr": {"city": "Paris"}},
        "dotted": {"addr.city": "Paris"},
        "lyon": {"addr": {"city": "Lyon"}},
        "moved": {"addr.city": "Paris"},
    }
    for external_id, attributes in writes.items():
        response = write.put(f"/v1/profiles/{external_id}", json={"attributes": attributes})
        assert response.status_code == 201, response.text
    moved = write.put("/v1/profiles/moved", json={"attributes": {"addr": {"city": "Lyon"}}})
    assert moved.json()["attributes"] == {"addr.city": "Lyon"}
    assert read.get("/v1/profiles/nested").json()["attributes"] == {"addr.city": "Paris"}
    assert _members(read, paris) == ["dotted", "nested"]
    preview = read.post("/v1/audiences/preview", json={"rule": rule, "sample": 10})
    assert preview.status_code == 200, preview.text
    assert (preview.json()["size"], sorted(preview.json()["sample"])) == (2, ["dotted", "nested"])
    assert refresh(write, paris)["size"] == 2
    assert _members(read, paris) == ["dotted", "nested"], "a refresh keeps what streaming added"
    for external_id in writes:
        answer = read.get(
            f"/v1/audiences/{paris}/members/{external_id}", params={"explain": "true"}
        ).json()
        assert answer["member"] is answer["explanation"]["member"], answer
        assert answer["member"] is (external_id in ("nested", "dotted"))
    for attributes in ({"addr": {"city": "Paris"}}, {"addr.city": "Paris"}):
        evaluated = read.post(
            "/v1/evaluate", json={"profile_id": "lyon", "attributes": attributes, "explain": True}
        ).json()
        verdict = next(a for a in evaluated["audiences"] if a["id"] == paris)
        assert verdict["member"] is True and verdict["explanation"]["member"] is True
    twice = write.put(
        "/v1/profiles/x", json={"attributes": {"addr": {"city": "A"}, "addr.city": "B"}}
    )
    assert twice.status_code == 422
    assert twice.json()["errors"][0]["code"] == "attribute_repeated"


def test_an_attribute_type_never_changes(tenant: Tenant) -> None:
    changed = tenant.admin.put("/v1/attributes/age", json={"type": "string"})
    assert changed.status_code == 409
    assert changed.json()["code"] == "attribute_type_conflict"
    described = tenant.admin.put(
        "/v1/attributes/age", json={"type": "integer", "description": "Years"}
    )
    assert described.status_code == 200
    assert tenant.read.get("/v1/attributes/age").json()["description"] == "Years"
    assert tenant.read.get("/v1/attributes/nope").status_code == 404
    for name in ("pid", "Bad Name", "x" * 200):
        assert (
            tenant.admin.put(f"/v1/attributes/{name}", json={"type": "string"}).status_code == 422
        )


def test_put_creates_then_merges_and_null_clears(tenant: Tenant) -> None:
    url = "/v1/profiles/user-1"
    created = tenant.write.put(url, json={"attributes": {"country": "US", "age": 30}})
    assert created.status_code == 201
    assert created.json()["attributes"] == {"country": "US", "age": 30}
    merged = tenant.write.put(url, json={"attributes": {"age": 31, "plan": "pro"}})
    assert merged.status_code == 200
    assert merged.json()["attributes"] == {"country": "US", "age": 31, "plan": "pro"}
    cleared = tenant.write.put(url, json={"attributes": {"country": None}})
    assert cleared.json()["attributes"] == {"age": 31, "plan": "pro"}
    assert tenant.read.get(url).json() == cleared.json()
    assert tenant.read.put(url, json={"attributes": {}}).status_code == 403


def test_a_record_that_contradicts_the_schema_is_refused_alone(tenant: Tenant) -> None:
    assert (
        tenant.write.put("/v1/profiles/keep", json={"attributes": {"age": 50}}).status_code == 201
    )
    batch = [
        {"id": "ok-1", "attributes": {"age": 20, "country": "US"}},
        {"id": "bad", "attributes": {"age": "thirty", "country": "US"}},
        {"id": "keep", "attributes": {"age": 51, "signup": "2024-02-30"}},
        {"id": "ok-2", "attributes": {"age": "22", "churned": "TRUE", "ltv": 3}},
    ]
    response = tenant.write.post("/v1/profiles/batch", json={"profiles": batch})
    assert response.status_code == 207, response.text
    answer = response.json()
    assert (answer["written"], answer["failed"]) == (2, 2)
    assert [r["status"] for r in answer["results"]] == [201, 422, 422, 201]
    assert [r["id"] for r in answer["results"]] == ["ok-1", "bad", "keep", "ok-2"]
    problem = answer["results"][1]["problem"]
    assert problem["status"] == 422
    assert problem["code"] == "profile_invalid"
    assert any("age" in str(e["location"]) for e in problem["errors"])
    assert "signup" in str(answer["results"][2]["problem"]["errors"])
    assert tenant.read.get("/v1/profiles/bad").status_code == 404
    assert tenant.read.get("/v1/profiles/keep").json()["attributes"] == {"age": 50}
    assert tenant.read.get("/v1/profiles/ok-2").json()["attributes"] == {
        "age": 22,
        "churned": True,
        "ltv": 3.0,
    }
    single = tenant.write.put("/v1/profiles/keep", json={"attributes": {"tags": "vip"}})
    assert single.status_code == 422
    assert single.json()["code"] == "profile_invalid"
    assert tenant.read.get("/v1/profiles/keep").json()["attributes"] == {"age": 50}


def test_an_attribute_name_that_is_not_unicode_is_refused_with_its_code(tenant: Tenant) -> None:
    """A lone surrogate as a name once answered 500 (no JSON text can hold it)."""
    name = chr(0xD800)
    headers = {"Content-Type": "application/json"}
    for method, url, body in [
        ("PUT", "/v1/profiles/p1", {"attributes": {name: 1}}),
        ("POST", "/v1/evaluate", {"attributes": {name: 1}}),
        ("POST", "/v1/profiles/batch", {"profiles": [{"id": "p1", "attributes": {name: 1}}]}),
    ]:
        response = tenant.write.request(method, url, content=json.dumps(body), headers=headers)
        answer = response.json()
        if url.endswith("batch"):
            assert (response.status_code, answer["failed"]) == (207, 1), answer
            answer = answer["results"][0]["problem"]
        assert (answer["status"], answer["code"]) == (422, "profile_invalid"), answer
        [error] = answer["errors"]
        assert (error["code"], error["location"]) == (
            "attribute_name_invalid",
            ["attributes", "\\ud800"],
        )
    assert tenant.read.get("/v1/profiles/p1").status_code == 404


def test_a_batch_over_ten_thousand_records_is_refused(tenant: Tenant) -> None:
    records = [{"id": f"p{n}"} for n in range(10_001)]
    response = tenant.write.post("/v1/profiles/batch", json={"profiles": records})
    assert response.status_code == 422
    assert response.json()["code"] == "validation_failed"
    assert tenant.read.get("/v1/profiles/p0").status_code == 404
    at_limit = tenant.write.post("/v1/profiles/batch", json={"profiles": records[:10_000]})
    assert at_limit.status_code == 200
    assert at_limit.json()["written"] == 10_000
    empty = tenant.write.post("/v1/profiles/batch", json={"profiles": []})
    assert empty.status_code == 422


def test_a_full_batch_fits_the_batch_body_limit(tenant: Tenant) -> None:
    """10,000 realistic records are several MiB: over the JSON limit, within the batch one."""
    records = [
        {"id": f"customer-{n:08d}@example.com", "attributes": {"country": "US", "plan": "pro" * 20}}
        for n in range(10_000)
    ]
    body = json.dumps({"profiles": records})
    assert len(body) > 1_048_576
    response = tenant.write.post(
        "/v1/profiles/batch", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.text[:300]
    assert response.json()["written"] == 10_000


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"profiles": [{"id": "x" * 512}]}, 200),
        ({"profiles": [{"id": "x" * 513}]}, 422),
        ({"profiles": [{"id": ""}]}, 422),
        ({"profiles": [{"id": "a\tb"}]}, 422),
        ({"profiles": [{"id": "a", "attributes": [1]}]}, 422),
        ({"profiles": [{"id": "a", "extra": 1}]}, 422),
        ({"profiles": [{"id": "a", "attributes": {"age": 2**63}}]}, 207),
        ({"profiles": [{"id": "a", "attributes": {"ltv": "NaN"}}]}, 207),
    ],
)
def test_batch_validation(tenant: Tenant, body: dict[str, Any], status: int) -> None:
    response = tenant.write.post("/v1/profiles/batch", json=body)
    assert response.status_code == status, response.text


def test_ids_with_odd_characters_round_trip(tenant: Tenant) -> None:
    for external_id in ["a b", "ünï", "x%2Fy", "+1-555", "=cmd"]:
        url = "/v1/profiles/" + external_id.replace("%", "%25")
        assert tenant.write.put(url, json={"attributes": {"age": 3}}).status_code == 201, (
            external_id
        )
        assert tenant.read.get(url).json()["id"] == external_id


def test_reserved_names_are_refused_and_excluded_in_the_contract(
    app: FastAPI, tenant: Tenant
) -> None:
    parameter = app.openapi()["paths"]["/v1/attributes/{name}"]["put"]["parameters"][0]
    assert parameter["name"] == "name"
    assert parameter["schema"]["not"] == {"enum": sorted(RESERVED_COLUMNS)}
    for reserved in RESERVED_COLUMNS:
        refused = tenant.admin.put(f"/v1/attributes/{reserved}", json={"type": "string"})
        assert refused.status_code == 422
        assert refused.json()["errors"][0]["location"] == ["path", "name"]
    assert tenant.admin.put("/v1/attributes/pids", json={"type": "string"}).status_code == 201


def test_concurrent_first_ingests_and_declarations_infer_once(bare: ApiClient) -> None:
    def ingest_one(n: int) -> Any:
        record = {"id": f"p{n}", "attributes": {"a": n, "b": "x"}}
        return lambda c: c.post("/v1/profiles/batch", json={"profiles": [record]})

    ingests = bare.gather([ingest_one(n) for n in range(6)])
    assert [r.status_code for r in ingests] == [200] * 6, [r.text for r in ingests]
    assert _types(bare) == {"a": "integer", "b": "string"}
    declared = bare.gather(
        [lambda c: c.put("/v1/attributes/c", json={"type": "date"}) for _ in range(6)]
    )
    assert sorted(r.status_code for r in declared) == [200] * 5 + [201]
    assert bare.get("/v1/profiles/p5").json()["attributes"] == {"a": 5, "b": "x"}


@pytest.mark.parametrize("text", ["9999-12-31T23:00:00-02:00", "0001-01-01T00:00:00+01:00"])
def test_a_timestamp_attribute_utc_cannot_hold_is_refused_per_profile(
    tenant: Tenant, text: str
) -> None:
    """Converting such a time to UTC overflows: the profile is refused as a type mismatch (it
    was a 500), alone or in a batch whose other records are written."""
    assert tenant.admin.put("/v1/attributes/seen", json={"type": "timestamp"}).status_code == 201
    alone = tenant.write.put("/v1/profiles/bad", json={"attributes": {"seen": text}})
    assert alone.status_code == 422, alone.text
    assert [e["code"] for e in alone.json()["errors"]] == ["attribute_type_mismatch"]
    records = [
        {"id": "bad", "attributes": {"seen": text}},
        {"id": "good", "attributes": {"seen": "2026-01-01T00:00:00Z"}},
    ]
    batch = tenant.write.post("/v1/profiles/batch", json={"profiles": records})
    assert batch.status_code == 207, batch.text
    assert [r["status"] for r in batch.json()["results"]] == [422, 201]
    problem = batch.json()["results"][0]["problem"]
    assert [e["code"] for e in problem["errors"]] == ["attribute_type_mismatch"]
    assert tenant.read.get("/v1/profiles/bad").status_code == 404
