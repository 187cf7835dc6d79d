"""One problem shape for every error; request ids; rate limits; no stack traces."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI

from audiences.api.app import create_app
from audiences.config import Settings
from audiences.schemas.api_keys import Role
from tests.client import ApiClient
from tests.factories import Tenant, client_for, mint_key, own_app

PROBLEM_KEYS = {"type", "title", "status", "detail", "code", "request_id", "errors"}


def _assert_problem(response: object, status: int, code: str) -> None:
    assert response.status_code == status  # type: ignore[attr-defined]
    assert response.headers["content-type"] == "application/problem+json"  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) >= PROBLEM_KEYS
    assert body["status"] == status
    assert body["code"] == code
    assert body["request_id"] == response.headers["x-request-id"]  # type: ignore[attr-defined]


def test_framework_errors_are_problems_too(tenant: Tenant) -> None:
    _assert_problem(tenant.read.get("/v1/nowhere"), 404, "not_found")
    _assert_problem(tenant.read.request("TRACE", "/v1/audiences"), 405, "method_not_allowed")
    _assert_problem(
        tenant.read.get("/v1/audiences", params={"limit": "x"}), 422, "validation_failed"
    )


def test_every_response_carries_a_request_id_and_echoes_a_sane_one(tenant: Tenant) -> None:
    ok = tenant.read.get("/v1/audiences")
    assert len(ok.headers["x-request-id"]) == 32
    echoed = tenant.read.get("/v1/audiences", headers={"X-Request-ID": "trace-123"})
    assert echoed.headers["x-request-id"] == "trace-123"
    hostile = tenant.read.get("/v1/audiences", headers={"X-Request-ID": "a b\tc" * 50})
    assert hostile.headers["x-request-id"] != "a b\tc" * 50
    assert tenant.anonymous.get("/livez").headers["x-request-id"]


@pytest.fixture
def strict_app(settings: Settings, tmp_path: Path) -> Iterator[FastAPI]:
    with own_app(settings, tmp_path, rate_limit="3/minute", require_if_match=True) as application:
        yield application


@pytest.fixture
def strict_client(strict_app: FastAPI) -> Iterator[ApiClient]:
    token, _ = mint_key(strict_app, "strict", Role.ADMIN)
    client = client_for(strict_app, token)
    yield client
    client.close()


def test_rate_limit_answers_429_with_retry_after_and_ratelimit_headers(
    strict_client: ApiClient,
) -> None:
    responses = [strict_client.get("/v1/audiences") for _ in range(4)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert responses[0].headers["ratelimit-policy"] == '"default";q=3;w=60'
    assert responses[0].headers["ratelimit"].startswith('"default";r=2;t=')
    limited = responses[3]
    _assert_problem(limited, 429, "rate_limited")
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert limited.headers["ratelimit"].startswith('"default";r=0;')


def test_if_match_can_be_required(strict_client: ApiClient) -> None:
    created = strict_client.post("/v1/audience-groups", json={"name": "g"}).json()
    response = strict_client.put(f"/v1/audience-groups/{created['id']}", json={"name": "h"})
    _assert_problem(response, 428, "if_match_required")


def test_unexpected_errors_are_500_problems_without_a_trace(settings: Settings) -> None:
    app = create_app(settings)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret internals")

    client = ApiClient(app)
    try:
        response = client.get("/boom")
    finally:
        client.close()
        app.state.engine.dispose()
    _assert_problem(response, 500, "internal_error")
    assert "secret" not in response.text
    assert "Traceback" not in response.text


def test_a_405_allows_every_method_of_the_path(tenant: Tenant) -> None:
    audience = tenant.write.post(
        "/v1/audiences", json={"key": "k405", "name": "n", "kind": "static"}
    ).json()
    cases = [
        ("DELETE", "/v1/audiences", "GET, POST"),
        ("TRACE", f"/v1/audiences/{audience['id']}", "DELETE, GET, PATCH, PUT"),
        ("PUT", f"/v1/audiences/{audience['id']}/members", "GET, POST"),
        ("DELETE", f"/v1/audiences/{audience['id']}/members/p1", "GET"),
        ("POST", "/v1/profiles/p1", "DELETE, GET, PUT"),
    ]
    for method, path, allowed in cases:
        response = tenant.write.request(method, path)
        _assert_problem(response, 405, "method_not_allowed")
        assert response.headers["allow"] == allowed, path


@pytest.mark.parametrize(
    ("params", "code"),
    [({"limit": 201}, "limit_out_of_range"), ({"limit": 0}, "validation_failed")],
)
def test_limit_over_the_maximum_has_its_own_code(
    tenant: Tenant, params: dict[str, int], code: str
) -> None:
    audience = tenant.write.post(
        "/v1/audiences", json={"key": "lim", "name": "n", "kind": "static"}
    ).json()
    for path in ["/v1/audiences", "/v1/jobs", f"/v1/audiences/{audience['id']}/members"]:
        response = tenant.read.get(path, params=params)
        _assert_problem(response, 422, code)
        assert response.json()["errors"][0]["location"] == ["query", "limit"]


def test_a_lower_configured_page_maximum_answers_limit_out_of_range(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"page_size_max": 20}))
    token, _ = mint_key(app, "small-pages", Role.READ)
    client = client_for(app, token)
    try:
        _assert_problem(
            client.get("/v1/audiences", params={"limit": 21}), 422, "limit_out_of_range"
        )
        assert client.get("/v1/audiences", params={"limit": 20}).status_code == 200
    finally:
        client.close()
        app.state.engine.dispose()


def test_a_multipart_upload_without_a_boundary_is_malformed_multipart(tenant: Tenant) -> None:
    audience = tenant.write.post(
        "/v1/audiences", json={"key": "multi", "name": "n", "kind": "static"}
    ).json()
    response = tenant.write.post(
        f"/v1/audiences/{audience['id']}/imports",
        content=b"--x\r\n",
        headers={"Content-Type": "multipart/form-data"},
    )
    _assert_problem(response, 400, "malformed_multipart")


def test_declaring_past_the_attribute_limit_is_too_many_attributes(app: FastAPI) -> None:
    """Inference stops at the limit (a write past it keeps the rest aside, unusable in rules);
    declaring one more is refused."""
    token, _ = mint_key(app, f"wide-{uuid.uuid4().hex[:8]}", Role.ADMIN)
    client = client_for(app, token)
    try:
        attributes = {f"a{n}": n for n in range(501)}
        written = client.put("/v1/profiles/p1", json={"attributes": attributes})
        assert written.status_code == 201, written.text
        declared = client.get("/v1/attributes").json()
        assert len(declared) == 500
        response = client.put("/v1/attributes/one_more", json={"type": "string"})
        _assert_problem(response, 422, "too_many_attributes")
    finally:
        client.close()
