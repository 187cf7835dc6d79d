"""Job fixtures: the session's database with short leases, unique handler names, a workspace.

Claims are global (a worker takes any due job whose handler it knows), so each test runs
handlers under names of its own: a job left queued by one test is never claimed by another.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from audiences import queue
from audiences.config import Settings
from audiences.services import workspaces
from audiences.store.db import make_engine, make_session_factory
from audiences.store.migrate import migrate
from audiences.store.tables import JobRow
from tests.databases import DATABASE_ENV
from tests.factories import Tenant, make_tenant, own_app


@pytest.fixture
def factory(app: FastAPI) -> sessionmaker[Session]:
    """Sessions on the test session's (migrated) database."""
    made: sessionmaker[Session] = app.state.session_factory
    return made


@pytest.fixture
def job_settings(settings: Settings) -> Settings:
    """Short leases and polls, no backoff: queue behaviour without waiting."""
    return settings.model_copy(
        update={"job_lease_seconds": 1.5, "job_poll_seconds": 0.02, "job_backoff_seconds": 0.0}
    )


@pytest.fixture
def handler() -> str:
    """A handler name no other test uses."""
    return f"tests.run_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def workspace_id(factory: sessionmaker[Session]) -> str:
    """A fresh workspace's id."""
    with factory.begin() as session:
        return workspaces.ensure(session, slug=f"jobs-{uuid.uuid4().hex[:12]}").id


def enqueue(factory: sessionmaker[Session], workspace_id: str, handler: str, **options: Any) -> str:
    """Queue a job in a committed transaction; its id."""
    options.setdefault("kind", "maintenance")
    with factory.begin() as session:
        return queue.enqueue(session, workspace_id=workspace_id, handler=handler, **options).id


def load(factory: sessionmaker[Session], job_id: str) -> JobRow:
    """The job as stored now."""
    with factory() as session:
        return session.get_one(JobRow, job_id)


@pytest.fixture
def isolated_database_url(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated database of this test's own (for worker processes that claim everything)."""
    server = os.environ.get(DATABASE_ENV)
    if not server:
        url = f"sqlite:///{tmp_path_factory.mktemp('isolated') / 'audiences.db'}"
        _migrate(url)
        yield url
        return
    name = f"audiences_jobs_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    _migrate(url)
    yield url
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _migrate(url: str) -> None:
    engine = make_engine(url)
    try:
        migrate(engine)
    finally:
        engine.dispose()


@pytest.fixture
def isolated_factory(isolated_database_url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions on :func:`isolated_database_url`."""
    engine = make_engine(isolated_database_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture(scope="module")
def hooks_app(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    """An app whose webhooks may reach loopback, with a schedule short enough to wait out."""
    with own_app(
        settings,
        tmp_path_factory.mktemp("hooks"),
        egress_allow_private=True,
        webhook_retry_schedule="0,0.2,0.2,0.2",
        webhook_batch_wait_seconds=0.0,
        webhook_batch_size=50,
        webhook_timeout_seconds=2.0,
        destination_file_root=tmp_path_factory.mktemp("files"),
    ) as application:
        yield application


@pytest.fixture
def hooks(hooks_app: FastAPI) -> Iterator[Tenant]:
    """A fresh workspace on :func:`hooks_app`."""
    with make_tenant(hooks_app) as made:
        yield made
