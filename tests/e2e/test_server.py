"""End to end over TCP: the README's run command, a life cycle, and a restart that loses nothing."""

from __future__ import annotations

import json
import uuid

import httpx

from tests.e2e.conftest import Server, cli, start_server, stop_server


def _client(server: Server, token: str | None = None) -> httpx.Client:
    return httpx.Client(
        base_url=server.base_url,
        headers={"Authorization": f"Bearer {token or server.token}"},
        timeout=10,
    )


def test_demo_key_lists_the_demo_audiences_and_docs_are_served(server: Server) -> None:
    with _client(server) as client:
        page = client.get("/v1/audiences", params={"include": "group"}).json()
        assert page["total"] >= 6
        kinds = {audience["kind"] for audience in page["data"]}
        assert kinds == {"static", "dynamic", "external"}
        assert any(audience["group"] for audience in page["data"])
        assert client.get("/v1/audience-groups").json()["total"] >= 2
        docs = client.get("/docs")
        assert docs.status_code == 200
        assert "swagger-ui" in docs.text


def test_life_cycle_over_http(server: Server) -> None:
    key = f"e2e-{uuid.uuid4().hex[:8]}"
    with _client(server) as client:
        created = client.post(
            "/v1/audiences",
            json={"key": key, "name": "E2E", "kind": "static"},
            headers={"Idempotency-Key": key},
        )
        assert created.status_code == 201
        url = created.headers["location"]
        etag = created.headers["etag"]
        renamed = client.patch(
            url,
            json={"name": "E2E renamed"},
            headers={"Content-Type": "application/merge-patch+json", "If-Match": etag},
        )
        assert renamed.status_code == 200
        assert (
            client.patch(
                url,
                json={"name": "lost update"},
                headers={"Content-Type": "application/merge-patch+json", "If-Match": etag},
            ).status_code
            == 412
        )
        assert client.get(url).json()["name"] == "E2E renamed"
        assert client.delete(url).status_code == 204
        assert client.get(url).status_code == 404


def test_cli_key_works_against_the_running_server(server: Server, e2e_database_url: str) -> None:
    result = cli(
        "keys",
        "create",
        "--workspace",
        "demo",
        "--role",
        "read",
        "--json",
        "--data-dir",
        str(server.data_dir),
        env={"AUDIENCES_DATABASE_URL": e2e_database_url},
    )
    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    assert created["role"] == "read"
    with _client(server, created["token"]) as client:
        assert client.get("/v1/audiences").status_code == 200
        refused = client.post("/v1/audiences", json={"key": "x", "name": "x", "kind": "static"})
        assert refused.status_code == 403


def test_restart_keeps_everything_and_the_demo_key(
    server: Server, e2e_database_url: str, tmp_path_factory: object
) -> None:
    data_dir = server.data_dir.parent / f"restart-{uuid.uuid4().hex[:6]}"
    url = (
        e2e_database_url
        if not e2e_database_url.startswith("sqlite")
        else f"sqlite:///{data_dir / 'meta.db'}"
    )
    first = start_server(data_dir, url)
    try:
        with _client(first) as client:
            made = client.post(
                "/v1/audiences", json={"key": "survivor", "name": "Survivor", "kind": "static"}
            )
            assert made.status_code in (201, 409)
            before = client.get("/v1/audiences", params={"key": "survivor"}).json()["data"]
    finally:
        output = stop_server(first)
    assert first.token in output, "the run command prints the demo key"
    second = start_server(data_dir, url)
    try:
        assert second.token == first.token
        with _client(second) as client:
            after = client.get("/v1/audiences", params={"key": "survivor"}).json()["data"]
            assert after == before
    finally:
        stop_server(second)
