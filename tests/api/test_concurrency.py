"""Races: two writers with one ETag (one wins, one 412), and concurrent creates with one
Idempotency-Key (exactly one audience)."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Awaitable, Callable

import httpx

from tests.factories import Tenant, audience_body, make_audience

Call = Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]


def _put(url: str, name: str, key: str) -> Call:
    async def call(client: httpx.AsyncClient) -> httpx.Response:
        body = audience_body(key=key, name=name)
        return await client.put(url, json=body, headers={"If-Match": '"1"'})

    return call


def test_two_writers_with_one_etag_one_wins_one_gets_412(tenant: Tenant) -> None:
    for _ in range(5):
        audience = make_audience(tenant.write)
        url = f"/v1/audiences/{audience['id']}"
        responses = tenant.write.gather(
            [_put(url, f"writer-{i}", audience["key"]) for i in range(2)]
        )
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200, 412], [r.text for r in responses]
        winner = next(r for r in responses if r.status_code == 200).json()
        final = tenant.read.get(url).json()
        assert final["name"] == winner["name"]
        assert final["version"] == 2


def _create(key: str, body: dict[str, object]) -> Call:
    async def call(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post("/v1/audiences", json=body, headers={"Idempotency-Key": key})

    return call


def test_twenty_concurrent_creates_with_one_key_make_one_audience(tenant: Tenant) -> None:
    key = str(uuid.uuid4())
    body = audience_body()
    responses = tenant.write.gather([_create(key, body) for _ in range(20)])
    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) <= {201, 409}, [r.text for r in responses]
    created_ids = {r.json()["id"] for r in responses if r.status_code == 201}
    assert len(created_ids) == 1
    for conflict in (r for r in responses if r.status_code == 409):
        assert conflict.json()["code"] == "idempotency_in_flight"
    listed = tenant.read.get("/v1/audiences", params={"key": body["key"]}).json()
    assert [a["id"] for a in listed["data"]] == list(created_ids)


def test_retry_replays_and_another_body_is_refused(tenant: Tenant) -> None:
    key = str(uuid.uuid4())
    body = audience_body()
    first = tenant.write.post("/v1/audiences", json=body, headers={"Idempotency-Key": key})
    retry = tenant.write.post("/v1/audiences", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == retry.status_code == 201
    assert retry.json() == first.json()
    assert retry.headers["location"] == first.headers["location"]
    assert retry.headers["idempotent-replayed"] == "true"
    other = tenant.write.post(
        "/v1/audiences", json=audience_body(), headers={"Idempotency-Key": key}
    )
    assert other.status_code == 422
    assert other.json()["code"] == "idempotency_key_reused"
    assert tenant.read.get("/v1/audiences").json()["total"] == 1


def test_failed_request_releases_its_key(tenant: Tenant) -> None:
    key = str(uuid.uuid4())
    taken = make_audience(tenant.write)
    clash = audience_body(key=taken["key"])
    failed = tenant.write.post("/v1/audiences", json=clash, headers={"Idempotency-Key": key})
    assert failed.status_code == 409
    assert tenant.write.delete(f"/v1/audiences/{taken['id']}").status_code == 204
    retried = tenant.write.post("/v1/audiences", json=clash, headers={"Idempotency-Key": key})
    assert retried.status_code == 201
    assert "idempotent-replayed" not in retried.headers


def test_keys_are_scoped_to_the_workspace(tenant: Tenant, other_tenant: Tenant) -> None:
    key = str(uuid.uuid4())
    body = audience_body()
    mine = tenant.write.post("/v1/audiences", json=body, headers={"Idempotency-Key": key})
    theirs = other_tenant.write.post("/v1/audiences", json=body, headers={"Idempotency-Key": key})
    assert mine.status_code == theirs.status_code == 201
    assert mine.json()["id"] != theirs.json()["id"]
