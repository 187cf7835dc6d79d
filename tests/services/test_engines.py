"""The service on each profile engine (``tests/engines/kinds.KINDS``): a whole app opened on
the engine through ``open_engine``, then batch membership (composite rules included), a
file import, erasure, and streaming, each checked against what the writes imply."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi import FastAPI

from audiences.api.app import create_app
from audiences.config import Settings
from audiences.services import static_members
from tests import factories
from tests.api.test_imports import upload
from tests.api.test_member_writes import members_of, static_audience
from tests.client import ApiClient
from tests.engines.kinds import KINDS, opened
from tests.factories import Tenant, make_tenant
from tests.oracle import refresh

PEOPLE: dict[str, dict[str, Any]] = {
    f"p{n}": {
        "country": ["US", "DE", "FR"][n % 3],
        "age": 18 + n,
        "tags": ["vip"] if n % 4 == 0 else [],
        "last_seen": datetime(2026, 1, 1 + n % 20, tzinfo=UTC).isoformat(),
    }
    for n in range(40)
}


@pytest.fixture(scope="module", params=KINDS)
def app(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FastAPI]:
    """The real application on one engine kind, SQLite metadata of its own."""
    folder = tmp_path_factory.mktemp(request.param)
    with opened(request.param, folder) as store:
        settings = Settings(
            **{"data_dir": folder, **store.settings},
            database_url=f"sqlite:///{folder / 'audiences.db'}",
            rate_limit="100000/minute",
        )
        application = create_app(settings)
        try:
            yield application
        finally:
            application.state.runtime.profiles.close()
            application.state.engine.dispose()


@pytest.fixture
def tenant(app: FastAPI) -> Iterator[Tenant]:
    with make_tenant(app) as made:
        yield made


def _write_people(client: ApiClient) -> None:
    batch = [{"id": eid, "attributes": attributes} for eid, attributes in PEOPLE.items()]
    response = client.post("/v1/profiles/batch", json={"profiles": batch})
    assert response.status_code == 200, response.text


def _dynamic(client: ApiClient, rule: str, **extra: Any) -> dict[str, Any]:
    body = {"key": f"d-{uuid.uuid4().hex[:8]}", "name": rule, "kind": "dynamic", "rule": rule}
    response = client.post("/v1/audiences", json={**body, **extra})
    assert response.status_code == 201, response.text
    return dict(response.json())


def _members(client: ApiClient, audience_id: str) -> set[str]:
    page = client.get(f"/v1/audiences/{audience_id}/members", params={"limit": 200}).json()
    return {member["id"] for member in page["data"]}


def test_batch_refreshes_compute_members_on_the_engine(tenant: Tenant) -> None:
    _write_people(tenant.write)
    us = _dynamic(tenant.write, "country = 'US' AND age >= 30")
    vips = _dynamic(tenant.write, "list_contains(tags, 'vip') OR last_seen < now()")
    both = _dynamic(tenant.write, f"in_audience('{us['key']}') AND NOT list_contains(tags, 'vip')")
    for audience in (us, vips, both):
        run = refresh(tenant.write, audience["id"])
        assert run["status"] == "succeeded", run
    wanted_us = {e for e, a in PEOPLE.items() if a["country"] == "US" and a["age"] >= 30}
    assert wanted_us and _members(tenant.read, us["id"]) == wanted_us
    assert _members(tenant.read, vips["id"]) == set(PEOPLE)
    assert _members(tenant.read, both["id"]) == {e for e in wanted_us if not PEOPLE[e]["tags"]}


def test_a_composite_rule_reads_the_members_of_another_audience(tenant: Tenant) -> None:
    _write_people(tenant.write)
    young = _dynamic(tenant.write, "age < 30")
    refresh(tenant.write, young["id"])
    french_young = _dynamic(tenant.write, f"country = 'FR' AND in_audience('{young['key']}')")
    assert refresh(tenant.write, french_young["id"])["status"] == "succeeded"
    wanted = {e for e, a in PEOPLE.items() if a["country"] == "FR" and a["age"] < 30}
    assert wanted and _members(tenant.read, french_young["id"]) == wanted


def test_an_import_fills_a_static_audience(app: FastAPI, tenant: Tenant) -> None:
    audience = static_audience(tenant.write)
    job = upload(tenant.write, audience["id"], b"id,plan\na,pro\nb,free\nc,team\n")
    factories.run_jobs(app, static_members.IMPORT_HANDLER)
    done = tenant.read.get(f"/v1/jobs/{job['id']}").json()
    assert done["state"] == "succeeded", done
    assert members_of(tenant.read, audience["id"]) == {"a", "b", "c"}
    assert tenant.read.get("/v1/profiles/c").status_code == 200  # the import made its profile


def test_erasure_removes_the_profile_and_its_memberships(tenant: Tenant) -> None:
    _write_people(tenant.write)
    everyone = _dynamic(tenant.write, "age > 0")
    refresh(tenant.write, everyone["id"])
    assert "p3" in _members(tenant.read, everyone["id"])
    assert tenant.write.delete("/v1/profiles/p3").status_code == 204
    assert tenant.read.get("/v1/profiles/p3").status_code == 404
    assert "p3" not in _members(tenant.read, everyone["id"])
    refresh(tenant.write, everyone["id"])
    assert _members(tenant.read, everyone["id"]) == set(PEOPLE) - {"p3"}


def test_streaming_audiences_follow_each_write(tenant: Tenant) -> None:
    streaming = _dynamic(
        tenant.write, "country = 'DE' AND age > 40", refresh_policy={"mode": "streaming"}
    )
    put = tenant.write.put("/v1/profiles/s1", json={"attributes": {"country": "DE", "age": 50}})
    assert put.status_code == 201, put.text
    assert _members(tenant.read, streaming["id"]) == {"s1"}
    tenant.write.put("/v1/profiles/s1", json={"attributes": {"age": 20}})
    assert _members(tenant.read, streaming["id"]) == set()
    assert refresh(tenant.write, streaming["id"])["size"] == 0


def test_readiness_checks_an_engine_behind_a_server(app: FastAPI, tenant: Tenant) -> None:
    checks = tenant.anonymous.get("/readyz").json()["checks"]
    server = app.state.settings.profile_engine != "duckdb"
    assert checks == {"database": "ok", **({"profile_engine": "ok"} if server else {})}
