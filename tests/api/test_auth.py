"""API keys: 401 without a valid key, 403 for a role too weak, tokens shown once, revocation."""

from __future__ import annotations

import pytest
from fastapi import FastAPI

from audiences.services.api_keys import hash_token
from audiences.store.tables import ApiKeyRow
from tests.factories import Tenant, audience_body, client_for, make_audience


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "missing_api_key"),
        ("Bearer aud_not-a-real-key", "invalid_api_key"),
        ("Bearer something-else", "invalid_api_key"),
        ("Basic dXNlcjpwYXNz", "missing_api_key"),
    ],
)
def test_missing_or_bad_key_is_401(tenant: Tenant, header: str | None, code: str) -> None:
    headers = {} if header is None else {"Authorization": header}
    response = tenant.anonymous.get("/v1/audiences", headers=headers)
    assert response.status_code == 401
    assert response.json()["code"] == code
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_read_key_cannot_write_and_write_key_cannot_manage_keys(tenant: Tenant) -> None:
    denied = tenant.read.post("/v1/audiences", json=audience_body())
    assert denied.status_code == 403
    assert denied.json()["code"] == "forbidden"
    audience = make_audience(tenant.write)
    assert tenant.read.delete(f"/v1/audiences/{audience['id']}").status_code == 403
    assert tenant.read.get(f"/v1/audiences/{audience['id']}").status_code == 200
    assert tenant.write.get("/v1/api-keys").status_code == 403
    assert tenant.write.post("/v1/api-keys", json={"name": "x", "role": "read"}).status_code == 403


def test_key_is_shown_once_stored_hashed_and_works(app: FastAPI, tenant: Tenant) -> None:
    response = tenant.admin.post("/v1/api-keys", json={"name": "ci", "role": "read"})
    assert response.status_code == 201
    created = response.json()
    token = created["token"]
    assert token.startswith("aud_") and len(token) >= 4 + 43
    assert created["prefix"] == token[:12]
    assert created["workspace"] == tenant.slug
    fetched = tenant.admin.get(f"/v1/api-keys/{created['id']}").json()
    assert "token" not in fetched
    listed = tenant.admin.get("/v1/api-keys").json()
    assert all("token" not in item for item in listed["data"])
    with app.state.session_factory() as session:
        row = session.get_one(ApiKeyRow, created["id"])
        assert row.token_hash == hash_token(token)
        assert token not in (row.token_hash, row.prefix)
    client = client_for(app, token)
    try:
        assert client.get("/v1/audiences").status_code == 200
    finally:
        client.close()


def test_revoked_key_answers_401(app: FastAPI, tenant: Tenant) -> None:
    created = tenant.admin.post("/v1/api-keys", json={"name": "tmp", "role": "write"}).json()
    client = client_for(app, created["token"])
    try:
        assert client.get("/v1/audiences").status_code == 200
        assert tenant.admin.delete(f"/v1/api-keys/{created['id']}").status_code == 204
        revoked = client.get("/v1/audiences")
        assert revoked.status_code == 401
        assert revoked.json()["code"] == "revoked_api_key"
        assert tenant.admin.get(f"/v1/api-keys/{created['id']}").json()["revoked_at"] is not None
    finally:
        client.close()


def test_key_creation_validates_role(tenant: Tenant) -> None:
    response = tenant.admin.post("/v1/api-keys", json={"name": "x", "role": "owner"})
    assert response.status_code == 422
