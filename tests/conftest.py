"""Shared fixtures: one app per test session on SQLite or PostgreSQL, a fresh workspace per test.

The metadata database is SQLite in a temporary folder unless ``AUDIENCES_TEST_DATABASE_URL``
names a PostgreSQL server; then a database of its own is created for the session and dropped
at the end. Tests are isolated by workspace: every resource is workspace-scoped, so a fresh
workspace is a clean slate without truncating anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from audiences.api.app import create_app
from audiences.config import Settings
from tests import ledger
from tests.databases import fresh_database
from tests.e2e import conftest as e2e
from tests.factories import Tenant, make_tenant

LEDGER_KEY = "audiences_ledger"
DATABASE_DIRS = frozenset({"api", "e2e", "jobs", "queue", "services", "store"})
"""The test folders of the layers that run SQL on the metadata database: CI runs the whole
suite on SQLite, then only these (``-m database``) again on PostgreSQL. The SDK and CLI reach the
database only through the API, whose own tests cover it; rules, engines and kit never do."""


def pytest_configure(config: pytest.Config) -> None:
    """Start recording error codes (tests/ledger.py)."""
    ledger.install()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests of the database layers ``database`` (see :data:`DATABASE_DIRS`)."""
    root = Path(__file__).parent
    for item in items:
        parts = item.path.relative_to(root).parts
        if len(parts) > 1 and parts[0] in DATABASE_DIRS:
            item.add_marker(pytest.mark.database)


def pytest_deselected(items: list[pytest.Item]) -> None:
    """A run with deselected tests (``-k``, ``-m``, ``--lf``) is not complete."""
    ledger.LEDGER.deselected += len(items)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """On the xdist controller: merge what a finished worker recorded."""
    data = getattr(node, "workeroutput", {}).get(LEDGER_KEY)
    if data is not None:
        ledger.LEDGER.merge(data)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Workers hand their ledger over; the controller (or a run without xdist) checks it:
    codes and statuses always, documented codes never produced only on a complete run."""
    config = session.config
    if hasattr(config, "workerinput"):
        config.workeroutput[LEDGER_KEY] = ledger.LEDGER.dump()  # type: ignore[attr-defined]
        return
    complete = (
        config.args_source is pytest.Config.ArgsSource.TESTPATHS
        and not config.option.keyword
        and not config.option.markexpr
        and ledger.LEDGER.deselected == 0
        and exitstatus == pytest.ExitCode.OK
        and not session.shouldstop
    )
    found = ledger.problems(ledger.LEDGER, complete=complete)
    if not found:
        return
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.section("error-code and status ledger (tests/ledger.py)", red=True)
        for line in found:
            reporter.line(line)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh, empty metadata database for this test session."""
    with fresh_database(tmp_path_factory.mktemp("metadata")) as url:
        yield url


@pytest.fixture(scope="session")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings for the session's app: the test database, a generous rate limit."""
    data_dir: Path = tmp_path_factory.mktemp("data")
    return Settings(data_dir=data_dir, database_url=database_url, rate_limit="100000/minute")


@pytest.fixture(scope="session")
def app(settings: Settings) -> Iterator[FastAPI]:
    """The real application, migrated, shared by the whole session."""
    application = create_app(settings)
    yield application
    application.state.engine.dispose()


@pytest.fixture
def tenant(app: FastAPI) -> Iterator[Tenant]:
    """A fresh workspace with a client per role."""
    with make_tenant(app) as made:
        yield made


@pytest.fixture
def other_tenant(app: FastAPI) -> Iterator[Tenant]:
    """A second fresh workspace, to check that nothing crosses over."""
    with make_tenant(app) as made:
        yield made


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[e2e.Server]:
    """A real ``audiences serve --demo`` on 127.0.0.1 (100 demo profiles), one per module:
    for the SDK's and the command line's tests over TCP. Its metadata database is its own, as
    its profile engine (DuckDB in its folder) is: on a database another server seeded, the
    demo workspace would be found seeded while this server's engine held none of its
    profiles or attribute columns."""
    folder = tmp_path_factory.mktemp("live")
    with fresh_database(folder) as url:
        running = e2e.start_server(folder / "data", url, demo_profiles=100)
        yield running
        e2e.stop_server(running)
