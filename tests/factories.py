"""Typed factories for tests: tenants with a client per role, audiences and groups via the API."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from audiences.api.app import create_app
from audiences.config import Settings
from audiences.jobs.handlers import HANDLERS, HandlerRegistry
from audiences.jobs.worker import Worker
from audiences.schemas.api_keys import ApiKeyCreate, Role
from audiences.services import api_keys, workspaces
from tests.client import ApiClient
from tests.databases import fresh_database

SCHEMA = {
    "country": "string",
    "age": "integer",
    "plan": "string",
    "churned": "boolean",
    "tags": "string_list",
    "ltv": "float",
    "signup": "date",
    "last_seen": "timestamp",
}
"""The attribute schema every test tenant declares."""


@dataclass
class Tenant:
    """A workspace and an authenticated in-process client for each role."""

    slug: str
    workspace_id: str
    tokens: dict[Role, str]
    admin: ApiClient
    write: ApiClient
    read: ApiClient
    anonymous: ApiClient


def mint_key(app: FastAPI, slug: str, role: Role) -> tuple[str, str]:
    """A new key for workspace ``slug`` (created if needed): its token and the workspace id."""
    with app.state.session_factory.begin() as session:
        workspace = workspaces.ensure(session, slug=slug)
        _, token = api_keys.create(
            session,
            workspace=workspace,
            data=ApiKeyCreate(name=f"test-{role}", role=role),
            actor="tests",
        )
        return token, workspace.id


def client_for(app: FastAPI, token: str | None) -> ApiClient:
    """An in-process client that sends ``token`` as its bearer key."""
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return ApiClient(app, headers=headers)


@contextmanager
def make_tenant(app: FastAPI) -> Iterator[Tenant]:
    """A fresh workspace with one key per role."""
    slug = f"t-{uuid.uuid4().hex[:12]}"
    tokens: dict[Role, str] = {}
    workspace_id = ""
    for role in Role:
        tokens[role], workspace_id = mint_key(app, slug, role)
    clients = [client_for(app, tokens[role]) for role in (Role.ADMIN, Role.WRITE, Role.READ)]
    anonymous = client_for(app, None)
    for name, kind in SCHEMA.items():
        declared = clients[0].put(f"/v1/attributes/{name}", json={"type": kind})
        assert declared.status_code == 201, declared.text
    try:
        yield Tenant(slug, workspace_id, tokens, *clients, anonymous)
    finally:
        for client in [*clients, anonymous]:
            client.close()


def audience_body(**overrides: Any) -> dict[str, Any]:
    """A valid audience write body; ``key`` is unique unless given, a rule only for dynamic."""
    body: dict[str, Any] = {
        "key": f"aud-{uuid.uuid4().hex[:10]}",
        "name": "US customers over 30",
        "kind": "dynamic",
    }
    body.update(overrides)
    if body["kind"] == "dynamic":
        body.setdefault("rule", "country = 'US' AND age > 30")
    return body


def make_audience(client: ApiClient, **overrides: Any) -> dict[str, Any]:
    """Create an audience through the API and return its body."""
    response = client.post("/v1/audiences", json=audience_body(**overrides))
    assert response.status_code == 201, response.text
    return dict(response.json())


def make_group(client: ApiClient, **overrides: Any) -> dict[str, Any]:
    """Create a group through the API and return its body."""
    body = {"name": f"group-{uuid.uuid4().hex[:8]}", "description": "a group"}
    body.update(overrides)
    response = client.post("/v1/audience-groups", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


@contextmanager
def own_app(settings: Settings, folder: Path, **update: Any) -> Iterator[FastAPI]:
    """An app beside the session's (``settings`` with ``update``), on a metadata database and a
    data folder of its own (in ``folder``), closed afterwards.

    Jobs are claimed from the whole metadata database, and run on the claiming app's profile
    engine: an app that shared the session's database would leave its jobs to the session
    app's ``run_jobs`` (which would run them on an engine without their profiles or files, and
    count them), and would claim the session app's jobs with its own workers."""
    with fresh_database(folder) as url:
        application = create_app(
            settings.model_copy(update={"data_dir": folder / "data", **update, "database_url": url})
        )
        try:
            yield application
        finally:
            application.state.runtime.profiles.close()
            application.state.engine.dispose()


def run_jobs(app: FastAPI, *handlers: str) -> int:
    """Run every due job of these handlers in this process, as the server's workers would;
    how many ran. Claims are global: every app beside the session's has a database of its own
    (:func:`own_app`), so they are this app's jobs. Only these handlers: earlier tests on this
    app may have left jobs of others queued."""
    registry = HandlerRegistry(
        {name: HANDLERS.get(name) for name in handlers}, needing_profiles=frozenset(handlers)
    )
    worker = Worker(
        session_factory=app.state.session_factory,
        settings=app.state.settings,
        registry=registry,
        runtime=app.state.runtime,
    )
    ran = 0
    while worker.run_once():
        ran += 1
    return ran
