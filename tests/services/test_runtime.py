"""Opening a process's runtime (``services.runtime.open_runtime``) on an engine that lost its
data: a whole app on a data folder and a metadata database (SQLite, or PostgreSQL under
``-m database``), stopped, its profile data lost, started again on the same metadata."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pytest
from fastapi import FastAPI

from audiences.api.app import create_app
from audiences.config import Settings
from audiences.engines.base import HeldColumns
from audiences.engines.duckdb import DuckDBEngine
from audiences.engines.duckdb_sql import table_name
from audiences.schemas.api_keys import Role
from audiences.schemas.attributes import AttributeType
from audiences.services import declarations, workspaces
from audiences.store.db import make_engine, make_session_factory
from audiences.store.migrate import migrate
from audiences.store.tables import AttributeRow
from audiences.store.tables.workspaces import WorkspaceRow
from tests.databases import fresh_database
from tests.engines.kinds import KINDS, opened
from tests.factories import SCHEMA, Tenant, client_for, make_audience, make_tenant, mint_key
from tests.oracle import refresh

EVENT_PROPERTIES = {"amount": "float", "sku": "string"}
SCHEMA_TYPES = {name: AttributeType(kind) for name, kind in SCHEMA.items()}


@contextmanager
def running(settings: Settings) -> Iterator[FastAPI]:
    """The app on ``settings``, its engine closed and its metadata connections dropped after."""
    app = create_app(settings)
    try:
        yield app
    finally:
        app.state.runtime.profiles.close()
        app.state.engine.dispose()


def _settings(folder: Path, metadata_url: str, engine: dict[str, Any]) -> Settings:
    return Settings(
        **{"data_dir": folder, **engine}, database_url=metadata_url, rate_limit="100000/minute"
    )


def _seed(app: FastAPI) -> tuple[str, dict[str, Any]]:
    """A tenant with the test schema, two event properties, profiles, an event and a
    refreshed audience; its slug and the audience."""
    with make_tenant(app) as tenant:
        for name, kind in EVENT_PROPERTIES.items():
            put = tenant.admin.put(f"/v1/event-properties/{name}", json={"type": kind})
            assert put.status_code == 201, put.text
        _write(tenant, {"a": {"country": "US", "age": 40}, "b": {"country": "DE", "age": 50}})
        _event(tenant, "a")
        audience = make_audience(tenant.write, rule="country = 'US'")
        assert refresh(tenant.write, audience["id"])["status"] == "succeeded"
        return tenant.slug, audience


def _write(tenant: Tenant, people: dict[str, dict[str, Any]]) -> None:
    batch = [{"id": eid, "attributes": attributes} for eid, attributes in people.items()]
    response = tenant.write.post("/v1/profiles/batch", json={"profiles": batch})
    assert response.status_code == 200, response.text
    assert all(result["status"] in (200, 201) for result in response.json()["results"])


def _event(tenant: Tenant, profile_id: str) -> None:
    body = {
        "profile_id": profile_id,
        "event": "order",
        "timestamp": "2026-01-02T03:04:05Z",
        "properties": {"amount": 12.5, "sku": "a-1"},
    }
    response = tenant.write.post("/v1/events", json={"events": [body]})
    assert response.status_code == 201, response.text


@contextmanager
def _again(app: FastAPI, slug: str) -> Iterator[Tenant]:
    """The seeded workspace, reached through the restarted app with new keys."""
    tokens: dict[Role, str] = {}
    workspace_id = ""
    for role in (Role.ADMIN, Role.WRITE, Role.READ):
        tokens[role], workspace_id = mint_key(app, slug, role)
    clients = [client_for(app, token) for token in tokens.values()]
    anonymous = client_for(app, None)
    try:
        yield Tenant(slug, workspace_id, tokens, *clients, anonymous)
    finally:
        for client in [*clients, anonymous]:
            client.close()


def _works_again(app: FastAPI, slug: str, audience: dict[str, Any]) -> None:
    """Declaring, writing profiles and events and refreshing all succeed, on columns the
    engine holds again."""
    with _again(app, slug) as tenant:
        _write(tenant, {"c": {"country": "US", "age": 20}})
        _event(tenant, "c")
        assert refresh(tenant.write, audience["id"])["status"] == "succeeded"
        members = tenant.read.get(f"/v1/audiences/{audience['id']}/members").json()["data"]
        assert {member["id"] for member in members} == {"c"}  # "a" was lost with the data
        put = tenant.admin.put("/v1/attributes/score", json={"type": "integer"})
        assert put.status_code == 201, put.text
        _write(tenant, {"c": {"score": 3}})
        profile = tenant.read.get("/v1/profiles/c").json()
        assert profile["attributes"] == {"country": "US", "age": 20, "score": 3}
        engine = app.state.runtime.profiles
        assert engine.attributes(tenant.workspace_id) == {**SCHEMA, "score": "integer"}
        assert engine.event_properties(tenant.workspace_id) == EVENT_PROPERTIES


@pytest.mark.parametrize("kind", KINDS)
def test_a_new_engine_on_the_same_metadata_gets_every_declared_column(
    kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with fresh_database(tmp_path) as url:
        with (
            opened(kind, tmp_path / "old") as old,
            running(_settings(tmp_path / "old", url, old.settings)) as app,
        ):
            slug, audience = _seed(app)
        with (
            opened(kind, tmp_path / "new") as new,
            caplog.at_level(logging.WARNING, logger="audiences.services"),
            running(_settings(tmp_path / "new", url, new.settings)) as app,
        ):
            _works_again(app, slug, audience)
    (warning,) = [r for r in caplog.records if r.name == "audiences.services"]
    assert warning.levelno == logging.WARNING
    message = warning.getMessage()
    assert "attributes " + ", ".join(sorted(SCHEMA)) in message
    assert "event properties amount, sku" in message
    assert "holds 0 profiles" in message and "pids of the old data" in message


def test_a_deleted_duckdb_file_is_made_again_with_its_columns_and_only_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The laptop case: the server stopped, its ``profiles.duckdb`` deleted, started again."""
    with fresh_database(tmp_path) as url:
        settings = _settings(tmp_path / "data", url, {})
        with running(settings) as app:
            slug, audience = _seed(app)
        for lost in (tmp_path / "data").glob("profiles.duckdb*"):
            lost.unlink()
        with caplog.at_level(logging.WARNING, logger="audiences.services"):
            with running(settings) as app:
                _works_again(app, slug, audience)
            assert len([r for r in caplog.records if r.name == "audiences.services"]) == 1
            caplog.clear()
            # Nothing missing now: nothing made, nothing said.
            with running(settings) as app, _again(app, slug) as tenant:
                assert app.state.runtime.profiles.count(tenant.workspace_id) == 1
            assert [r for r in caplog.records if r.name == "audiences.services"] == []


def test_a_column_of_another_type_is_left_as_it_is_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An engine holding a declared name under another type: the rest is made, that column is
    not touched, and the log says which it is."""
    with fresh_database(tmp_path) as url:
        with running(_settings(tmp_path / "old", url, {})) as app:
            slug, _ = _seed(app)
            with _again(app, slug) as tenant:
                workspace_id = tenant.workspace_id
        other = DuckDBEngine(tmp_path / "new")
        other.ensure_attributes(workspace_id, {"age": AttributeType.STRING})
        other.close()
        with (
            caplog.at_level(logging.WARNING, logger="audiences.services"),
            running(_settings(tmp_path / "new", url, {})) as app,
        ):
            held = app.state.runtime.profiles.attributes(workspace_id)
    assert held == {**SCHEMA, "age": "string"}
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        f"workspace {workspace_id}: the profile engine holds attribute 'age' as string, but "
        "it is declared integer; left as it is (rules on it may fail)."
    ]


def test_an_engine_that_refuses_one_workspace_does_not_stop_the_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An engine whose workspace cannot be looked at (here: its profile table's name is
    taken by a view in the new file) fails that workspace only: the app starts, serves, and
    the log says which workspace was not checked and that the next start tries again."""
    with fresh_database(tmp_path) as url:
        with running(_settings(tmp_path / "old", url, {})) as app:
            slug, _ = _seed(app)
            with _again(app, slug) as tenant:
                workspace_id = tenant.workspace_id
        (tmp_path / "new").mkdir()
        blocked = duckdb.connect(str(tmp_path / "new" / "profiles.duckdb"))
        blocked.execute(f'CREATE VIEW "{table_name(workspace_id)}" AS SELECT 1 AS pid')
        blocked.close()
        with (
            caplog.at_level(logging.WARNING, logger="audiences.services"),
            running(_settings(tmp_path / "new", url, {})) as app,
        ):
            assert client_for(app, None).get("/livez").status_code == 200
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors, "the workspace that could not be checked is logged"
    assert all(
        message.startswith(f"workspace {workspace_id}: the profile engine's columns of declared ")
        and message.endswith("the process starts anyway and checks again at its next start.")
        for message in errors
    )


class _CountingEngine(DuckDBEngine):
    """A DuckDB engine that counts its catalog reads and refuses to be asked workspace by
    workspace, or, with ``catalog_error``, whose catalog cannot be read at all (a server
    that went away between connecting and the first query)."""

    def __init__(self, path: Path, catalog_error: Exception | None = None) -> None:
        super().__init__(path)
        self.catalog_reads = 0
        self.catalog_error = catalog_error

    def columns_of(self, workspace_ids: Sequence[str]) -> dict[str, HeldColumns]:
        self.catalog_reads += 1
        if self.catalog_error is not None:
            raise self.catalog_error
        return super().columns_of(workspace_ids)

    def attributes(self, workspace_id: str) -> dict[str, AttributeType]:
        raise AssertionError("a start reads the catalog once, not each workspace")

    event_properties = attributes


def _declare(sessions: Any, slug: str, attributes: dict[str, AttributeType]) -> str:
    """A workspace declaring ``attributes`` (straight into the metadata); its id."""
    with sessions.begin() as session:
        workspace = workspaces.ensure(session, slug=slug, name=slug)
        for name, kind in attributes.items():
            session.add(AttributeRow(workspace_id=workspace.id, name=name, type=kind.value))
        return workspace.id


def test_a_start_reads_the_engine_s_catalog_once_for_every_workspace(tmp_path: Path) -> None:
    """Twelve workspaces: the engine's catalog is read once; each workspace gets what it
    lacks (all of it, a column, nothing) and a column held under another type is reported."""
    metadata = make_engine(f"sqlite:///{tmp_path / 'metadata.db'}")
    migrate(metadata)
    sessions = make_session_factory(metadata)
    whole = {f"ws{n}": _declare(sessions, f"ws{n}", SCHEMA_TYPES) for n in range(10)}
    partial = _declare(sessions, "partial", SCHEMA_TYPES)
    other = _declare(sessions, "other", {"age": AttributeType.INTEGER})
    seeded = DuckDBEngine(tmp_path / "profiles")
    seeded.ensure_attributes(whole["ws0"], SCHEMA_TYPES)
    seeded.ensure_attributes(partial, {"country": AttributeType.STRING})
    seeded.ensure_attributes(other, {"age": AttributeType.STRING})
    seeded.close()
    engine = _CountingEngine(tmp_path / "profiles")
    try:
        with sessions() as session:
            found = {r.workspace_id: r for r in declarations.restore_columns(session, engine)}
        assert engine.catalog_reads == 1
        assert set(found) == {*whole.values(), partial, other} - {whole["ws0"]}
        assert found[partial].made == {"attributes": sorted(set(SCHEMA_TYPES) - {"country"})}
        assert found[other].made == {} and found[other].failed == {}
        assert found[other].mistyped == {
            "attribute": {"age": (AttributeType.INTEGER, AttributeType.STRING)}
        }
        held = engine.columns_of([*whole.values(), partial])
        assert all(columns.attributes == SCHEMA_TYPES for columns in held.values())
    finally:
        engine.close()
        metadata.dispose()


def test_an_engine_whose_catalog_cannot_be_read_fails_every_workspace_and_starts(
    tmp_path: Path,
) -> None:
    metadata = make_engine(f"sqlite:///{tmp_path / 'metadata.db'}")
    migrate(metadata)
    sessions = make_session_factory(metadata)
    ids = [_declare(sessions, slug, SCHEMA_TYPES) for slug in ("a", "b")]
    engine = _CountingEngine(tmp_path / "profiles", duckdb.IOException("the disk went away"))
    try:
        with sessions() as session:
            found = declarations.restore_columns(session, engine)
        assert sorted(r.workspace_id for r in found) == sorted(ids)
        assert all(
            r.failed == {"attributes": "IOException: the disk went away"} and not r.made
            for r in found
        )
        assert engine.catalog_reads == 1
    finally:
        engine.close()
        metadata.dispose()


def test_a_workspace_id_no_table_can_bear_fails_alone(tmp_path: Path) -> None:
    """A workspace whose id could not name a table (written into the metadata by hand) is
    reported failed with the reason, and every other workspace is still checked and repaired."""
    metadata = make_engine(f"sqlite:///{tmp_path / 'metadata.db'}")
    migrate(metadata)
    sessions = make_session_factory(metadata)
    good = _declare(sessions, "good", SCHEMA_TYPES)
    with sessions.begin() as session:
        session.add(WorkspaceRow(id="not a table name!", slug="odd", name="odd"))
        session.flush()
        session.add(AttributeRow(workspace_id="not a table name!", name="age", type="integer"))
    engine = DuckDBEngine(tmp_path / "profiles")
    try:
        with sessions() as session:
            found = {r.workspace_id: r for r in declarations.restore_columns(session, engine)}
        assert found["not a table name!"].failed == {
            "attributes": "InvalidParameter: A workspace id is 1 to 64 letters, digits, '_' or '-'."
        }
        assert found[good].made == {"attributes": sorted(SCHEMA_TYPES)} and not found[good].failed
        assert engine.columns_of([good])[good].attributes == SCHEMA_TYPES
    finally:
        engine.close()
        metadata.dispose()
