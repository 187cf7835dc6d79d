"""The OpenAPI contract, the offline docs page, and the operator endpoints."""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from sqlalchemy import create_engine

from audiences.api.app import create_app
from audiences.config import Settings
from tests.client import ApiClient
from tests.factories import Tenant


def test_openapi_declares_security_errors_and_headers(app: FastAPI) -> None:
    spec: dict[str, Any] = app.openapi()
    schemes = spec["components"]["securitySchemes"]
    assert any(s["type"] == "http" and s["scheme"] == "bearer" for s in schemes.values())
    for path, operations in spec["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, operation in operations.items():
            assert operation.get("security"), f"{method} {path} declares no security"
            statuses = set(operation["responses"])
            assert {"401", "429"} <= statuses, f"{method} {path}: {statuses}"
            problem = operation["responses"]["401"]["content"]
            assert "application/problem+json" in problem
    create = spec["paths"]["/v1/audiences"]["post"]
    headers = {p["name"] for p in create["parameters"] if p["in"] == "header"}
    assert "Idempotency-Key" in headers
    put = spec["paths"]["/v1/audiences/{audience_id}"]["put"]
    assert "if-match" in {p["name"].lower() for p in put["parameters"]}
    assert {"412", "428", "409"} <= set(put["responses"])
    patch_body = spec["paths"]["/v1/audiences/{audience_id}"]["patch"]["requestBody"]["content"]
    assert set(patch_body) == {
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/json",  # an array, read as a JSON Patch
    }


def test_docs_page_needs_no_network(tenant: Tenant) -> None:
    page = tenant.anonymous.get("/docs")
    assert page.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets
    for asset in assets:
        assert asset.startswith("/"), f"{asset} would need the network"
        assert tenant.anonymous.get(asset).status_code == 200, asset
    assert tenant.anonymous.get("/openapi.json").json()["info"]["title"] == "Audiences"


def test_health_endpoints(tenant: Tenant) -> None:
    assert tenant.anonymous.get("/livez").json() == {"status": "ok"}
    ready = tenant.anonymous.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok"}


def test_readyz_is_503_when_the_database_does_not_answer(settings: Settings) -> None:
    app = create_app(settings)
    app.state.engine.dispose()
    app.state.engine = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    client = ApiClient(app)
    try:
        response = client.get("/readyz")
    finally:
        client.close()
        app.state.engine.dispose()
    assert response.status_code == 503
    assert response.json()["code"] == "database_unavailable"


def test_metrics_count_requests_by_route_template(tenant: Tenant) -> None:
    for _ in range(3):
        assert tenant.read.get("/v1/audiences").status_code == 200
    assert tenant.read.get("/v1/audiences/nope").status_code == 404
    text = tenant.anonymous.get("/metrics").text
    ok = re.search(
        r'audiences_http_requests_total\{method="GET",route="/v1/audiences",status="200"\} (\d+)',
        text,
    )
    assert ok is not None and int(float(ok.group(1))) >= 3
    assert 'route="/v1/audiences/{audience_id}",status="404"' in text
    assert "/v1/audiences/nope" not in text
    assert "audiences_http_request_duration_seconds_bucket" in text
    assert "# TYPE audiences_jobs gauge" in text
