"""One problem shape for every error; request ids; rate limits; no stack traces."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI

from audiences.api.app import create_app
from audiences.config import Settings
from audiences.schemas.api_keys import Role
from tests.client import ApiClient
from tests.factories import Tenant, client_for, mint_key

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
def strict_app(settings: Settings) -> Iterator[FastAPI]:
    tight = settings.model_copy(update={"rate_limit": "3/minute", "require_if_match": True})
    application = create_app(tight)
    yield application
    application.state.engine.dispose()


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
