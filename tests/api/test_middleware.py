"""The ASGI middleware, called directly with a body the test controls: authentication before the
body is read, per-address limits for unknown keys, and bodies that stop arriving (issue #11)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from fastapi import FastAPI

from audiences.config import Settings
from audiences.schemas.api_keys import Role
from tests import factories
from tests.factories import Tenant, make_audience, mint_key

SAFETY_SECONDS = 30
"""Only so that a broken app fails the test instead of hanging it; never reached when it works."""


@dataclass
class Answer:
    """What the app sent, and how many parts of the body it asked for."""

    status: int
    headers: dict[str, str]
    body: bytes
    parts_read: int

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    app: FastAPI,
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    parts: tuple[bytes, ...] = (),
    stall: bool = False,
    client: tuple[str, int] = ("127.0.0.1", 50000),
) -> Answer:
    """One request straight into the ASGI app: the body in ``parts``, then, with ``stall``, a
    client that sends nothing more and never hangs up."""
    sent: list[dict[str, Any]] = []
    read = 0

    async def run() -> None:
        nonlocal read
        responded = anyio.Event()
        messages = [
            {"type": "http.request", "body": part, "more_body": stall or i < len(parts) - 1}
            for i, part in enumerate(parts or (b"",))
        ]

        async def receive() -> dict[str, Any]:
            nonlocal read
            if read < len(messages):
                read += 1
                return messages[read - 1]
            await responded.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                responded.set()

        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
            "client": client,
            "server": ("testserver", 80),
        }
        with anyio.fail_after(SAFETY_SECONDS):
            await app(scope, receive, send)

    anyio.run(run)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    answer_headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    return Answer(start["status"], answer_headers, body, read)


@pytest.fixture
def own_app(settings: Settings, tmp_path: Path) -> Iterator[FastAPI]:
    """An app of its own, with a small rate limit and a short body timeout."""
    with factories.own_app(
        settings, tmp_path, worker_threads=0, rate_limit="3/minute", body_timeout_seconds=0.05
    ) as app:
        yield app


JSON_BODY = {"Content-Type": "application/json", "Content-Length": "14000000"}


@pytest.mark.parametrize(
    ("method", "path", "authorization", "code"),
    [
        ("POST", "/v1/audiences", None, "missing_api_key"),
        ("POST", "/v1/profiles/batch", None, "missing_api_key"),
        ("POST", "/v1/audiences/a1/members", None, "missing_api_key"),
        ("POST", "/v1/no-such-route", None, "missing_api_key"),
        ("PUT", "/v1/audiences/a1", "Bearer aud_not-a-key", "invalid_api_key"),
        ("PATCH", "/v1/audience-groups/g1", "Basic dXNlcjpwYXNz", "missing_api_key"),
    ],
)
def test_a_request_without_a_valid_key_is_401_before_its_body_is_read(
    app: FastAPI, method: str, path: str, authorization: str | None, code: str
) -> None:
    headers = dict(JSON_BODY)
    if authorization is not None:
        headers["Authorization"] = authorization
    answer = call(app, method, path, headers=headers, parts=(b'{"records": [' + b" " * 65536,))
    assert (answer.status, answer.json()["code"]) == (401, code)
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert answer.parts_read == 0


def test_a_request_with_a_valid_key_reads_its_body(app: FastAPI, tenant: Tenant) -> None:
    headers = {
        "Content-Type": "application/json",
        "Authorization": f"Bearer {tenant.tokens[Role.WRITE]}",
    }
    body = json.dumps({"key": "in-parts", "name": "n", "kind": "static"}).encode()
    answer = call(app, "POST", "/v1/audiences", headers=headers, parts=(body[:9], body[9:]))
    assert answer.status == 201, answer.body
    assert answer.parts_read == 2


def test_requests_without_a_valid_key_are_rate_limited_per_client_address(
    own_app: FastAPI,
) -> None:
    token, _ = mint_key(own_app, "per-address", Role.READ)
    bad = {"Authorization": "Bearer aud_guessed"}
    first, second = ("10.0.0.1", 1234), ("10.0.0.2", 1234)
    for _ in range(3):
        assert call(own_app, "GET", "/v1/audiences", headers=bad, client=first).status == 401
    refused = call(own_app, "GET", "/v1/audiences", headers=bad, client=first)
    assert (refused.status, refused.json()["code"]) == (429, "rate_limited")
    assert int(refused.headers["retry-after"]) >= 1
    assert call(own_app, "GET", "/v1/audiences", client=first).status == 429
    assert call(own_app, "GET", "/v1/audiences", headers=bad, client=second).status == 401
    good = {"Authorization": f"Bearer {token}"}
    assert call(own_app, "GET", "/v1/audiences", headers=good, client=first).status == 200


def test_a_body_that_stops_arriving_is_408_and_the_connection_closes(own_app: FastAPI) -> None:
    token, _ = mint_key(own_app, "slow-bodies", Role.WRITE)
    auth = {"Authorization": f"Bearer {token}"}
    answer = call(
        own_app,
        "POST",
        "/v1/audiences",
        headers={**auth, "Content-Type": "application/json"},
        parts=(b'{"key": ',),
        stall=True,
    )
    assert (answer.status, answer.json()["code"]) == (408, "request_timeout")
    assert answer.headers["connection"] == "close"
    body = json.dumps({"key": "slow", "name": "n", "kind": "static"}).encode()
    created = call(
        own_app,
        "POST",
        "/v1/audiences",
        headers={**auth, "Content-Type": "application/json"},
        parts=tuple(body[i : i + 4] for i in range(0, len(body), 4)),
    )
    assert created.status == 201, created.body


def test_an_upload_that_stops_arriving_is_408_and_leaves_no_file(
    own_app: FastAPI, tmp_path: Path
) -> None:
    token, _ = mint_key(own_app, "slow-uploads", Role.WRITE)
    auth = {"Authorization": f"Bearer {token}"}
    audience = call(
        own_app,
        "POST",
        "/v1/audiences",
        headers={**auth, "Content-Type": "application/json"},
        parts=(json.dumps({"key": "list", "name": "n", "kind": "static"}).encode(),),
    ).json()
    answer = call(
        own_app,
        "POST",
        f"/v1/audiences/{audience['id']}/imports",
        headers={**auth, "Content-Type": "text/csv"},
        parts=(b"id\na\n", b"b\n"),
        stall=True,
    )
    assert (answer.status, answer.json()["code"]) == (408, "request_timeout")
    assert list((tmp_path / "imports").rglob("upload")) == []


def test_the_shared_clients_still_work(tenant: Tenant) -> None:
    assert make_audience(tenant.write)["version"] == 1
    assert tenant.anonymous.get("/v1/no-such-route").json()["code"] == "missing_api_key"
    assert tenant.read.get("/v1/no-such-route").json()["code"] == "not_found"
