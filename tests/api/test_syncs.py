"""External audiences with members: file sources fetched from a real HTTP server on loopback,
SQL sources against a query written here as the oracle, push sources as static lists, and the
sync's state, runs, changes, failures and metrics through the API."""

from __future__ import annotations

import gzip
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest
from fastapi import FastAPI
from pyroaring import BitMap
from sqlalchemy import select

from audiences import queue
from audiences.config import Settings
from audiences.jobs.schedule import queue_syncs
from audiences.kit.clock import utcnow
from audiences.services import audiences, static_members, sync_sources, syncs
from audiences.services.sync_sources import SQL_FAILED
from audiences.store import db
from audiences.store.tables import AudienceRow, JobRow, MembershipChangeRow
from tests import factories
from tests.api.test_member_writes import members_of
from tests.client import ApiClient
from tests.factories import Tenant, make_tenant, own_app

MAX_BYTES = 64 * 1024
TIMEOUT = 2.0


@dataclass
class Served:
    """What the loopback server answers for one path: status, body, and a delay first."""

    status: int = 200
    body: bytes = b""
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    chunked: bool = False
    """Without a ``Content-Length``: the body ends when the connection closes."""
    gate: threading.Event | None = None
    """When set, the answer waits for it (at most 10 s)."""
    trickle: tuple[tuple[int, float], ...] = ()
    """The body sent in parts: up to each offset, after its pause in seconds; the rest then
    waits for ``gate`` (the headers go first, with the whole body's length)."""


class FileServer:
    """A real HTTP server on 127.0.0.1 serving ``files`` by path (404 for others); it records
    each request's path and ``Host`` header."""

    def __init__(self) -> None:
        self.files: dict[str, Served] = {}
        self.requests: list[str] = []
        self.hosts: list[str | None] = []
        files, requests, hosts = self.files, self.requests, self.hosts

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                requests.append(self.path)
                hosts.append(self.headers.get("Host"))
                served = files.get(self.path, Served(404, b"not found"))
                time.sleep(served.delay)
                if served.gate is not None and not served.trickle:
                    served.gate.wait(10)
                try:
                    self.send_response(served.status)
                    for name, value in served.headers.items():
                        self.send_header(name, value)
                    if not served.chunked:
                        self.send_header("Content-Length", str(len(served.body)))
                    self.end_headers()
                    sent = 0
                    for end, pause in served.trickle:
                        time.sleep(pause)
                        self.wfile.write(served.body[sent:end])
                        self.wfile.flush()
                        sent = end
                    if served.trickle and served.gate is not None:
                        served.gate.wait(10)
                    self.wfile.write(served.body[sent:])
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        """The URL of ``path`` on this server."""
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def server() -> Iterator[FileServer]:
    """One loopback file server for the module."""
    running = FileServer()
    yield running
    running.close()


@pytest.fixture(scope="module")
def sync_app(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    """An app that may fetch from loopback, reads files under its own sync folder, and caps a
    fetch at 64 KiB and two seconds (no worker threads: the tests run the jobs)."""
    folder = tmp_path_factory.mktemp("sync-app")
    (folder / "root").mkdir()
    with own_app(
        settings,
        folder,
        egress_allow_private=True,
        sync_root=folder / "root",
        sync_max_bytes=MAX_BYTES,
        sync_timeout_seconds=TIMEOUT,
        worker_threads=0,
    ) as application:
        yield application


@pytest.fixture(scope="module")
def patient_app(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    """An app like ``sync_app`` that waits 30 s for a file, for tests that hold a fetch open."""
    with own_app(
        settings,
        tmp_path_factory.mktemp("patient-app"),
        egress_allow_private=True,
        sync_timeout_seconds=30.0,
        worker_threads=0,
    ) as application:
        yield application


@pytest.fixture
def ws(sync_app: FastAPI) -> Iterator[Tenant]:
    """A fresh workspace of the sync app."""
    with make_tenant(sync_app) as made:
        yield made


def run_syncs(app: FastAPI) -> int:
    """Run the queued sync jobs (and member writes, evaluations) in this process."""
    return factories.run_jobs(
        app,
        syncs.SYNC_HANDLER,
        static_members.WRITE_HANDLER,
        static_members.IMPORT_HANDLER,
        audiences.EVALUATE,
    )


def external(client: ApiClient, source: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """An external audience with ``source``, made through the API."""
    body = {"key": f"ext-{time.monotonic_ns()}", "name": "ext", "kind": "external"}
    response = client.post("/v1/audiences", json={**body, "source": source, **fields})
    assert response.status_code == 201, response.text
    return dict(response.json())


def csv_source(server: FileServer, path: str, **extra: Any) -> dict[str, Any]:
    """A CSV file source at ``path`` of the loopback server."""
    return {"type": "file", "url": server.url(path), "format": "csv", **extra}


def sync_of(client: ApiClient, audience_id: str) -> dict[str, Any]:
    """The audience's ``sync``."""
    return dict(client.get(f"/v1/audiences/{audience_id}").json()["sync"])


def test_a_file_sync_replaces_members_and_records_who_entered_and_exited(
    sync_app: FastAPI, ws: Tenant, server: FileServer
) -> None:
    server.files["/list.csv"] = Served(body=b"id,plan\na,pro\nb,free\nc,pro\n")
    audience = external(ws.write, csv_source(server, "/list.csv"))
    assert audience["sync"]["status"] == "syncing"  # its first sync is queued with it
    assert audience["writes"] is None
    run_syncs(sync_app)
    assert members_of(ws.read, audience["id"]) == {"a", "b", "c"}
    state = sync_of(ws.read, audience["id"])
    assert (state["status"], state["last_error"]) == ("synced", None)
    first_job = state["job_id"]
    server.files["/list.csv"] = Served(body=b"id,plan\nb,free\nc,pro\nd,team\n")
    started = ws.write.post(f"/v1/audiences/{audience['id']}/sync")
    assert started.status_code == 202, started.text
    job = started.json()
    assert started.headers["Location"] == f"/v1/jobs/{job['id']}"
    assert (job["handler"], job["kind"], job["state"]) == ("membership.sync", "sync", "queued")
    again = ws.write.post(f"/v1/audiences/{audience['id']}/sync")
    assert again.json()["id"] == job["id"]  # one sync at a time: the queued one
    run_syncs(sync_app)
    assert members_of(ws.read, audience["id"]) == {"b", "c", "d"}
    changes = ws.read.get(f"/v1/audiences/{audience['id']}/changes", params={"limit": 10}).json()
    assert {(c["id"], c["change"]) for c in changes["data"]} == {("a", "exited"), ("d", "entered")}
    runs = ws.read.get(f"/v1/audiences/{audience['id']}/runs").json()["data"]
    assert [(r["trigger"], r["status"], r["entered"], r["exited"]) for r in runs] == [
        ("sync", "succeeded", 1, 1),
        ("sync", "succeeded", 3, 0),
    ]
    state = sync_of(ws.read, audience["id"])
    assert (state["status"], state["job_id"], state["last_run_id"]) == (
        "synced",
        job["id"],
        runs[0]["id"],
    )
    assert state["job_id"] != first_job
    done = ws.read.get(f"/v1/jobs/{job['id']}").json()
    assert done["state"] == "succeeded"
    assert done["result"]["entered"] == 1 and done["counts"]["rows"] == 3
    body = ws.read.get(f"/v1/audiences/{audience['id']}").json()
    assert (body["size"], body["evaluation"]["status"]) == (3, "succeeded")


def test_a_syncs_changes_reach_destinations_naming_its_run(
    sync_app: FastAPI, ws: Tenant, server: FileServer
) -> None:
    """The outbox row a sync writes names the sync's run, as a batch run's does."""
    server.files["/followed.csv"] = Served(body=b"id\na\nb\n")
    audience = external(ws.write, csv_source(server, "/followed.csv"))
    hook = ws.write.post(
        "/v1/destinations",
        json={
            "name": "crm",
            "kind": "webhook",
            "url": f"http://127.0.0.1:{server.server.server_address[1]}/hook",
            "subscription": {"audience_ids": [audience["id"]]},
        },
    )
    assert hook.status_code == 201, hook.text
    run_syncs(sync_app)
    runs = ws.read.get(f"/v1/audiences/{audience['id']}/runs").json()["data"]
    with sync_app.state.session_factory() as session:
        causes = session.scalars(
            select(MembershipChangeRow.cause).where(
                MembershipChangeRow.audience_id == audience["id"]
            )
        ).all()
    assert causes == [f"run:{runs[0]['id']}"]


def test_ndjson_parquet_and_gzipped_files_sync_and_bad_rows_are_reported(
    sync_app: FastAPI, ws: Tenant, server: FileServer, tmp_path: Path
) -> None:
    server.files["/list.ndjson"] = Served(
        body=b'{"user": "n1"}\n{"user": 7}\n{"other": "x"}\nnot json\n{"user": "n2"}\n'
    )
    ndjson = external(
        ws.write,
        {
            "type": "file",
            "url": server.url("/list.ndjson"),
            "format": "ndjson",
            "id_column": "user",
        },
    )
    parquet = tmp_path / "list.parquet"
    with duckdb.connect() as con:
        con.execute(
            f"COPY (SELECT * FROM (VALUES ('p1', 1), ('p2', 2), (NULL, 3)) t(uid, n)) "
            f"TO '{parquet}' (FORMAT parquet)"
        )
    long_id = b"x" * 600
    server.files["/list.csv.gz"] = Served(body=gzip.compress(b"id\ng1\n" + long_id + b"\ng2\n"))
    gzipped = external(ws.write, csv_source(server, "/list.csv.gz"))
    server.files["/list.parquet"] = Served(body=parquet.read_bytes())
    from_parquet = external(
        ws.write,
        {
            "type": "file",
            "url": server.url("/list.parquet"),
            "format": "parquet",
            "id_column": "uid",
        },
    )
    run_syncs(sync_app)
    assert sync_of(ws.read, ndjson["id"])["status"] == "synced", sync_of(ws.read, ndjson["id"])
    assert members_of(ws.read, ndjson["id"]) == {"n1", "7", "n2"}
    assert members_of(ws.read, from_parquet["id"]) == {"p1", "p2"}
    assert members_of(ws.read, gzipped["id"]) == {"g1", "g2"}
    csv_job = ws.read.get(f"/v1/jobs/{sync_of(ws.read, gzipped['id'])['job_id']}").json()
    assert [(e["row"], e["code"]) for e in csv_job["errors"]] == [(2, "id_too_long")]
    assert (csv_job["counts"]["rows"], csv_job["counts"]["invalid"]) == (3, 1)
    job = ws.read.get(f"/v1/jobs/{sync_of(ws.read, ndjson['id'])['job_id']}").json()
    assert {(e["row"], e["code"]) for e in job["errors"]} == {
        (3, "id_missing"),
        (4, "row_malformed"),
    }
    assert (job["counts"]["rows"], job["counts"]["invalid"]) == (5, 2)


@pytest.mark.parametrize(
    ("served", "code"),
    [
        (Served(404, b"gone"), "sync_fetch_failed"),
        (Served(500, b"oops"), "sync_fetch_failed"),
        (Served(body=b"id\nlate\n", delay=TIMEOUT * 2), "sync_timeout"),
        (Served(body=b"id\n" + b"x" * (MAX_BYTES + 10) + b"\n"), "sync_too_large"),
        (Served(body=b"name,plan\na,pro\n"), "sync_file_invalid"),
        (Served(body=b""), "sync_file_invalid"),
        (Served(body=b"id\n\x00\x01\x02\n"), "sync_file_invalid"),
    ],
    ids=["404", "500", "timeout", "too-large", "no-id-column", "empty", "no-valid-row"],
)
def test_a_failed_sync_keeps_the_members_and_says_why(
    sync_app: FastAPI, ws: Tenant, server: FileServer, served: Served, code: str
) -> None:
    path = f"/fail-{time.monotonic_ns()}.csv"
    server.files[path] = Served(body=b"id\nkeep-1\nkeep-2\n")
    audience = external(ws.write, csv_source(server, path))
    run_syncs(sync_app)
    assert members_of(ws.read, audience["id"]) == {"keep-1", "keep-2"}
    server.files[path] = served
    job = ws.write.post(f"/v1/audiences/{audience['id']}/sync").json()
    run_syncs(sync_app)
    assert members_of(ws.read, audience["id"]) == {"keep-1", "keep-2"}
    state = sync_of(ws.read, audience["id"])
    assert (state["status"], state["last_error_code"], state["job_id"]) == (
        "failed",
        code,
        job["id"],
    )
    assert state["last_error"] and state["last_synced_at"] < state["last_attempt_at"]
    finished = ws.read.get(f"/v1/jobs/{job['id']}").json()
    assert finished["state"] == "failed" and code in finished["last_error"]
    (run, _) = ws.read.get(f"/v1/audiences/{audience['id']}/runs").json()["data"]
    assert (run["status"], run["error"]) == ("failed", state["last_error"])
    body = ws.read.get(f"/v1/audiences/{audience['id']}").json()
    assert (body["size"], body["evaluation"]["status"]) == (2, "failed")
    assert body["evaluation"]["consecutive_failures"] == 1


def test_path_sources_read_only_under_the_sync_folder(
    sync_app: FastAPI, ws: Tenant, tmp_path: Path
) -> None:
    shared: Path = sync_app.state.settings.sync_root
    root = shared / ws.workspace_id  # each workspace reads its own folder only
    (root / "lists").mkdir(parents=True, exist_ok=True)
    listed = root / "lists" / f"{time.monotonic_ns()}.csv"
    listed.write_text("id\nf1\nf2\n")
    audience = external(ws.write, {"type": "file", "path": str(listed), "format": "csv"})
    run_syncs(sync_app)
    assert members_of(ws.read, audience["id"]) == {"f1", "f2"}
    outside = tmp_path / "secret.csv"
    outside.write_text("id\nsecret\n")
    sneaky = root / "lists" / "link.csv"
    sneaky.unlink(missing_ok=True)
    sneaky.symlink_to(outside)
    with make_tenant(sync_app) as other:  # another workspace's file, under the shared root
        (shared / other.workspace_id).mkdir(exist_ok=True)
        theirs = shared / other.workspace_id / "theirs.csv"
        theirs.write_text("id\ntheirs\n")
    (shared / "top.csv").write_text("id\ntop\n")
    paths = [str(outside), str(root / ".." / "secret.csv"), str(sneaky), "lists/x.csv"]
    for path in (*paths, str(theirs), str(shared / "top.csv")):
        refused = ws.write.post(
            "/v1/audiences",
            json={
                "key": "nope",
                "name": "n",
                "kind": "external",
                "source": {"type": "file", "path": path, "format": "csv"},
            },
        )
        assert refused.status_code == 422, path
        problem = refused.json()
        assert problem["code"] == "sync_path_not_allowed"
        assert problem["errors"][0]["location"] == ["body", "source", "path"]
    listed.unlink()
    ws.write.post(f"/v1/audiences/{audience['id']}/sync")
    run_syncs(sync_app)
    state = sync_of(ws.read, audience["id"])
    assert (state["status"], state["last_error_code"]) == ("failed", "sync_fetch_failed")
    assert members_of(ws.read, audience["id"]) == {"f1", "f2"}


def test_a_sql_source_holds_the_profiles_its_query_returns(sync_app: FastAPI, ws: Tenant) -> None:
    records = [
        {"id": f"u{n}", "attributes": {"age": 18 + n * 7 % 50, "plan": ["free", "pro"][n % 2]}}
        for n in range(30)
    ]
    assert ws.write.post("/v1/profiles/batch", json={"profiles": records}).status_code == 200
    query = "SELECT external_id FROM profiles WHERE plan = 'pro' AND age >= 40"
    audience = external(ws.write, {"type": "sql", "query": query})
    run_syncs(sync_app)
    oracle = {
        r["id"]
        for r in records
        if r["attributes"]["plan"] == "pro" and r["attributes"]["age"] >= 40
    }
    assert oracle and members_of(ws.read, audience["id"]) == oracle
    assert sync_of(ws.read, audience["id"])["status"] == "synced"
    leaving = sorted(oracle)[0]
    assert ws.write.put(f"/v1/profiles/{leaving}", json={"attributes": {"age": 10}}).is_success
    ws.write.post(f"/v1/audiences/{audience['id']}/sync")
    run_syncs(sync_app)
    assert members_of(ws.read, audience["id"]) == oracle - {leaving}
    exports = ws.read.get(f"/v1/audiences/{audience['id']}/export", params={"format": "ndjson"})
    assert exports.status_code == 200 and len(exports.text.splitlines()) == len(oracle) - 1


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("DROP TABLE profiles", "sql_not_select"),
        ("SELECT external_id FROM profiles; DELETE FROM profiles", "sql_multiple_statements"),
        ("SELECT external_id FROM api_keys", "sql_table_not_allowed"),
        ("SELECT column0 FROM read_csv('/etc/passwd')", "sql_table_not_allowed"),
        ("SELECT external_id FROM profiles WHERE getenv('HOME') = ''", "sql_function_not_allowed"),
        ("SELECT external_id, pid FROM profiles", "sql_one_column"),
    ],
)
def test_unsafe_sql_is_refused_when_saved(ws: Tenant, query: str, code: str) -> None:
    body = {"key": "q", "name": "q", "kind": "external", "source": {"type": "sql", "query": query}}
    refused = ws.write.post("/v1/audiences", json=body)
    assert refused.status_code == 422, refused.text
    problem = refused.json()
    assert problem["code"] == "sync_query_invalid"
    assert code in {error["code"] for error in problem["errors"]}
    assert all(error["location"] == ["body", "source", "query"] for error in problem["errors"])
    assert ws.read.get("/v1/audiences", params={"key": "q"}).json()["data"] == []


def test_a_sql_source_failing_on_the_data_keeps_the_members(sync_app: FastAPI, ws: Tenant) -> None:
    ws.write.put("/v1/profiles/s1", json={"attributes": {"age": 50}})
    audience = external(ws.write, {"type": "sql", "query": "SELECT external_id FROM profiles"})
    run_syncs(sync_app)
    assert members_of(ws.read, audience["id"]) == {"s1"}
    patched = ws.write.patch(
        f"/v1/audiences/{audience['id']}",
        json={"source": {"query": "SELECT external_id FROM profiles WHERE missing > 1"}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert patched.status_code == 200, patched.text
    run_syncs(sync_app)  # the changed source queued a sync
    state = sync_of(ws.read, audience["id"])
    assert (state["status"], state["last_error_code"]) == ("failed", "engine_query_failed")
    assert state["last_error"] == SQL_FAILED  # never the engine's words: they can quote values
    assert members_of(ws.read, audience["id"]) == {"s1"}
    # A column of numbers with a fraction names no profile: refused, not an empty audience.
    patched = ws.write.patch(
        f"/v1/audiences/{audience['id']}",
        json={"source": {"query": "SELECT pid * 1.5 FROM profiles"}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert patched.status_code == 200, patched.text
    run_syncs(sync_app)
    state = sync_of(ws.read, audience["id"])
    assert (state["status"], state["last_error_code"]) == ("failed", "sync_query_invalid")
    assert "returns a column of type" in state["last_error"]
    assert members_of(ws.read, audience["id"]) == {"s1"}


def test_a_push_source_takes_writes_and_imports_as_a_static_audience(
    sync_app: FastAPI, ws: Tenant
) -> None:
    audience = external(ws.write, {"type": "push", "name": "crm", "external_id": "list-9"})
    assert (audience["sync"]["status"], audience["writes"]) == ("pending", "applied")
    assert audience["source"] == {"type": "push", "name": "crm", "external_id": "list-9"}
    url = f"/v1/audiences/{audience['id']}/members"
    added = ws.write.post(url, json={"action": "add", "ids": ["a", "b", "c"]})
    assert added.status_code == 202, added.text
    assert sync_of(ws.read, audience["id"])["status"] == "syncing"
    run_syncs(sync_app)
    ws.write.post(url, json={"action": "remove", "ids": ["a"]})
    run_syncs(sync_app)
    assert members_of(ws.read, audience["id"]) == {"b", "c"}
    imported = ws.write.post(
        f"/v1/audiences/{audience['id']}/imports",
        content=b"id\nx\ny\n",
        headers={"Content-Type": "text/csv"},
        params={"mode": "replace"},
    )
    assert imported.status_code == 202, imported.text
    run_syncs(sync_app)
    assert members_of(ws.read, audience["id"]) == {"x", "y"}
    state = sync_of(ws.read, audience["id"])
    assert state["status"] == "synced" and state["last_synced_at"] is not None
    changes = ws.read.get(f"/v1/audiences/{audience['id']}/changes").json()
    assert {(c["id"], c["change"]) for c in changes["data"]} == {
        ("b", "exited"),
        ("c", "exited"),
        ("x", "entered"),
        ("y", "entered"),
    }
    not_synced = ws.write.post(f"/v1/audiences/{audience['id']}/sync")
    assert (not_synced.status_code, not_synced.json()["code"]) == (409, "audience_not_syncable")


def test_an_audience_with_no_source_is_pushed_and_a_pulled_one_refuses_writes(
    sync_app: FastAPI, ws: Tenant, server: FileServer
) -> None:
    legacy = ws.write.post(
        "/v1/audiences", json={"key": "old", "name": "old", "kind": "external"}
    ).json()
    assert legacy["source"] == {"type": "push", "name": None, "external_id": None}
    written = ws.write.post(
        f"/v1/audiences/{legacy['id']}/members", json={"action": "add", "ids": ["a"]}
    )
    assert written.status_code == 202  # the 409 of external audiences' members is gone
    run_syncs(sync_app)
    assert members_of(ws.read, legacy["id"]) == {"a"}
    server.files["/pulled.csv"] = Served(body=b"id\na\n")
    pulled = external(ws.write, csv_source(server, "/pulled.csv"))
    refused = ws.write.post(
        f"/v1/audiences/{pulled['id']}/members", json={"action": "add", "ids": ["a"]}
    )
    assert (refused.status_code, refused.json()["code"]) == (409, "audience_not_static")
    dynamic = ws.write.post(
        "/v1/audiences", json={"key": "d", "name": "d", "kind": "dynamic", "rule": "age > 1"}
    ).json()
    no_sync = ws.write.post(f"/v1/audiences/{dynamic['id']}/sync")
    assert (no_sync.status_code, no_sync.json()["code"]) == (409, "audience_not_syncable")
    assert dynamic["sync"] is None
    assert ws.read.post(f"/v1/audiences/{pulled['id']}/sync").status_code == 403
    run_syncs(sync_app)  # nothing left queued for other tests' workers to claim


def test_sources_are_validated_strictly(ws: Tenant, server: FileServer) -> None:
    base = {"key": "v", "name": "v", "kind": "external"}
    bad_sources: list[dict[str, Any]] = [
        {"type": "file", "format": "csv"},
        {"type": "file", "url": server.url("/a"), "path": "/a", "format": "csv"},
        {"type": "file", "url": server.url("/a"), "format": "xlsx"},
        {"type": "file", "url": server.url("/a"), "format": "csv", "sheet": 1},
        {"type": "sql"},
        {"type": "ftp"},
        {"name": "crm"},
    ]
    for source in bad_sources:
        refused = ws.write.post("/v1/audiences", json={**base, "source": source})
        assert refused.status_code == 422, source
    streaming = ws.write.post(
        "/v1/audiences",
        json={
            **base,
            "source": {"type": "sql", "query": "SELECT pid FROM profiles"},
            "refresh_policy": {"mode": "streaming"},
        },
    )
    assert (streaming.status_code, streaming.json()["code"]) == (422, "sync_not_streamable")
    parked = external(
        ws.write, {"type": "sql", "query": "SELECT pid FROM profiles"}, lifecycle_state="inactive"
    )
    assert parked["sync"]["status"] == "pending"  # a parked audience is not synced
    refused = ws.write.post(f"/v1/audiences/{parked['id']}/sync")
    assert (refused.status_code, refused.json()["code"]) == (409, "audience_inactive")


def test_the_guard_refuses_private_urls_unless_allowed(app: FastAPI, tenant: Tenant) -> None:
    for url in (
        "http://127.0.0.1:9/list.csv",
        "http://10.0.0.1/x",
        "http://169.254.169.254/",
        f"https://{'h' * 64}.example.com/list.csv",  # a label httpx cannot send to
    ):
        refused = tenant.write.post(
            "/v1/audiences",
            json={
                "key": "g",
                "name": "g",
                "kind": "external",
                "source": {"type": "file", "url": url, "format": "csv"},
            },
        )
        assert (refused.status_code, refused.json()["code"]) == (400, "url_not_allowed"), url
    path = tenant.write.post(
        "/v1/audiences",
        json={
            "key": "p",
            "name": "p",
            "kind": "external",
            "source": {"type": "file", "path": "/etc/passwd", "format": "csv"},
        },
    )
    assert (path.status_code, path.json()["code"]) == (422, "sync_path_not_allowed")


def test_scheduled_syncs_are_queued_when_due_and_counted_in_metrics(
    sync_app: FastAPI, ws: Tenant, server: FileServer
) -> None:
    server.files["/scheduled.csv"] = Served(body=b"id\ns1\n")
    audience = external(
        ws.write,
        csv_source(server, "/scheduled.csv"),
        refresh_policy={"mode": "scheduled", "interval_seconds": 3600},
    )
    run_syncs(sync_app)
    factory = sync_app.state.session_factory
    with factory.begin() as session:
        assert audience["id"] not in {job.subject_id for job in queue_syncs(session, now=utcnow())}
    later = utcnow().replace(year=utcnow().year + 1)
    with factory.begin() as session:
        queued = [
            job for job in queue_syncs(session, now=later) if job.subject_id == audience["id"]
        ]
    assert len(queued) == 1 and queued[0].created_by == "scheduler"
    assert sync_of(ws.read, audience["id"])["job_id"] == queued[0].id
    server.files["/scheduled.csv"] = Served(404)
    run_syncs(sync_app)
    metrics = ws.read.get("/metrics").text
    attempts = _metric(metrics, "audiences_sync_attempts_total")
    failures = _metric(metrics, "audiences_sync_failures_total")
    assert attempts >= 2 and failures >= 1
    assert 'audiences_syncs{status="failed"}' in metrics
    # Counters never go down: deleting the audience (and its sync state) keeps them.
    assert ws.write.delete(f"/v1/audiences/{audience['id']}").status_code == 204
    after = ws.read.get("/metrics").text
    assert _metric(after, "audiences_sync_attempts_total") >= attempts
    assert _metric(after, "audiences_sync_failures_total") >= failures


def _metric(text: str, name: str) -> float:
    line = next(line for line in text.splitlines() if line.startswith(name + " "))
    return float(line.split()[1])


def test_a_sync_job_that_ends_without_recording_reads_as_failed(
    sync_app: FastAPI, ws: Tenant
) -> None:
    audience = external(ws.write, {"type": "sql", "query": "SELECT pid FROM profiles"})
    job_id = audience["sync"]["job_id"]
    assert ws.write.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
    state = sync_of(ws.read, audience["id"])
    assert (state["status"], state["last_error_code"], state["job_id"]) == (
        "failed",
        "sync_job_failed",
        job_id,
    )
    again = ws.write.post(f"/v1/audiences/{audience['id']}/sync").json()
    assert again["id"] != job_id
    run_syncs(sync_app)
    assert sync_of(ws.read, audience["id"])["status"] == "synced"


def test_a_source_changed_while_it_is_pulled_is_pulled_again(
    patient_app: FastAPI, server: FileServer
) -> None:
    first, second = f"/slow-{time.monotonic_ns()}.csv", f"/new-{time.monotonic_ns()}.csv"
    held = threading.Event()
    server.files[first] = Served(body=b"id\nold\n", gate=held)
    server.files[second] = Served(body=b"id\nnew\n")
    with make_tenant(patient_app) as tenant:
        audience = external(tenant.write, csv_source(server, first))
        worker = threading.Thread(target=run_syncs, args=(patient_app,))
        worker.start()
        try:
            while first not in server.requests:  # the job is pulling the first file now
                time.sleep(0.01)
            patched = tenant.write.patch(
                f"/v1/audiences/{audience['id']}",
                json={"source": {"url": server.url(second)}},
                headers={"Content-Type": "application/merge-patch+json"},
            )
        finally:
            held.set()
            worker.join()
        assert patched.status_code == 200, patched.text
        assert patched.json()["sync"]["job_id"] == audience["sync"]["job_id"]  # it goes on
        job = tenant.read.get(f"/v1/jobs/{audience['sync']['job_id']}").json()
        assert job["state"] == "succeeded", (job["last_error"], job["errors"])
        assert members_of(tenant.read, audience["id"]) == {"new"}
        runs = tenant.read.get(f"/v1/audiences/{audience['id']}/runs").json()["data"]
        assert len(runs) == 1  # the first file's members were never recorded


def test_a_running_sync_shows_how_far_it_has_got(patient_app: FastAPI, server: FileServer) -> None:
    """A slow source: while its file trickles in, the audience's ``sync.progress`` and the
    job show the bytes fetched of its length and no rows yet; once synced, the job says every
    row was read of exactly that many, and the sync shows no progress."""
    path = f"/trickle-{time.monotonic_ns()}.csv"
    body = b"id\n" + b"".join(b"member-%05d\n" % n for n in range(60_000))
    quarter, half = len(body) // 4, len(body) // 2
    held = threading.Event()
    # Two parts past the first, 1.2 s apart: a report a second at most cannot miss both.
    trickle = ((quarter, 0.0), (quarter + 100_000, 1.2), (half, 1.2))
    served = Served(body=body, gate=held, trickle=trickle)
    server.files[path] = served
    with make_tenant(patient_app) as tenant:
        audience = external(tenant.write, csv_source(server, path))
        worker = threading.Thread(target=run_syncs, args=(patient_app,))
        worker.start()
        try:
            deadline = time.monotonic() + 20
            while True:  # until the job reports a later part (a report a second at most)
                state = sync_of(tenant.read, audience["id"])
                progress = state["progress"]
                if progress is not None and (progress["bytes_fetched"] or 0) > quarter:
                    break
                assert time.monotonic() < deadline, state
                time.sleep(0.05)
            job = tenant.read.get(f"/v1/jobs/{state['job_id']}").json()
        finally:
            held.set()
            worker.join()
        assert state["status"] == "syncing"
        assert quarter < progress["bytes_fetched"] <= half  # the rest waits on the source
        assert progress["bytes_total"] == len(body)
        assert (progress["rows_read"], progress["rows_total"]) == (0, None)  # not read yet
        assert job["state"] == "running"
        assert job["progress"]["processed"] == 0 and job["progress"]["total"] is None
        assert quarter < job["counts"]["bytes_fetched"] <= half
        assert job["counts"]["bytes_total"] == len(body)
        done = tenant.read.get(f"/v1/jobs/{state['job_id']}").json()
        assert done["state"] == "succeeded", done["last_error"]
        assert done["progress"] == {"processed": 60_000, "total": 60_000, "percent": 100.0}
        assert done["counts"]["bytes_fetched"] == len(body) and done["counts"]["rows"] == 60_000
        after = sync_of(tenant.read, audience["id"])
        assert (after["status"], after["progress"]) == ("synced", None)


def test_a_sync_skipped_because_the_audience_was_parked_leaves_syncing(
    sync_app: FastAPI, ws: Tenant
) -> None:
    audience = external(ws.write, {"type": "sql", "query": "SELECT pid FROM profiles"})
    run_syncs(sync_app)
    assert sync_of(ws.read, audience["id"])["status"] == "synced"
    queued = ws.write.post(f"/v1/audiences/{audience['id']}/sync").json()
    parked = ws.write.patch(
        f"/v1/audiences/{audience['id']}",
        json={"lifecycle_state": "inactive"},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert parked.status_code == 200, parked.text
    run_syncs(sync_app)
    job = ws.read.get(f"/v1/jobs/{queued['id']}").json()
    assert job["result"]["skipped"] == "the audience is inactive or archived"
    state = sync_of(ws.read, audience["id"])
    assert (state["status"], state["job_id"]) == ("synced", None)
    fresh = external(ws.write, {"type": "sql", "query": "SELECT pid FROM profiles"})
    parked = ws.write.patch(
        f"/v1/audiences/{fresh['id']}",
        json={"lifecycle_state": "inactive"},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert parked.status_code == 200, parked.text
    run_syncs(sync_app)
    assert sync_of(ws.read, fresh["id"])["status"] == "pending"  # never synced


def test_a_source_that_fails_while_it_is_changed_is_not_recorded_as_failed(
    patient_app: FastAPI, server: FileServer
) -> None:
    first, second = f"/gone-{time.monotonic_ns()}.csv", f"/good-{time.monotonic_ns()}.csv"
    held = threading.Event()
    server.files[first] = Served(404, b"missing", gate=held)
    server.files[second] = Served(body=b"id\ngood\n")
    with make_tenant(patient_app) as tenant:
        audience = external(tenant.write, csv_source(server, first))
        worker = threading.Thread(target=run_syncs, args=(patient_app,))
        worker.start()
        try:
            while first not in server.requests:
                time.sleep(0.01)
            patched = tenant.write.patch(
                f"/v1/audiences/{audience['id']}",
                json={"source": {"url": server.url(second)}},
                headers={"Content-Type": "application/merge-patch+json"},
            )
        finally:
            held.set()
            worker.join()
        assert patched.status_code == 200, patched.text
        assert members_of(tenant.read, audience["id"]) == {"good"}
        runs = tenant.read.get(f"/v1/audiences/{audience['id']}/runs").json()["data"]
        assert [run["status"] for run in runs] == ["succeeded"]
        assert sync_of(tenant.read, audience["id"])["status"] == "synced"


def test_a_source_changed_after_the_running_job_recorded_queues_another(
    sync_app: FastAPI, ws: Tenant
) -> None:
    audience = external(ws.write, {"type": "sql", "query": "SELECT pid FROM profiles"})
    job_id = audience["sync"]["job_id"]
    factory = sync_app.state.session_factory
    with factory.begin() as session:  # the job has compared and recorded, not yet ended
        session.get_one(JobRow, job_id).state = "running"
        row = session.get_one(AudienceRow, audience["id"])
        syncs.record(session, audience=row, members=BitMap(), job_id=job_id, cache=None)
    patched = ws.write.patch(
        f"/v1/audiences/{audience['id']}",
        json={"source": {"query": "SELECT external_id FROM profiles"}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert patched.status_code == 200, patched.text
    follow_up = patched.json()["sync"]
    assert follow_up["status"] == "syncing" and follow_up["job_id"] != job_id
    with factory.begin() as session:
        session.get_one(JobRow, job_id).state = "succeeded"


def test_concurrent_sync_requests_queue_one_job(sync_app: FastAPI, ws: Tenant) -> None:
    for _ in range(3):
        audience = external(ws.write, {"type": "sql", "query": "SELECT pid FROM profiles"})
        run_syncs(sync_app)
        url = f"/v1/audiences/{audience['id']}/sync"

        async def post(client: httpx.AsyncClient, url: str = url) -> httpx.Response:
            return await client.post(url)

        answers = ws.write.gather([post for _ in range(8)])
        assert {a.status_code for a in answers} == {202}, [a.text for a in answers]
        assert len({a.json()["id"] for a in answers}) == 1
        factory = sync_app.state.session_factory
        with factory() as session:
            row = session.get_one(AudienceRow, audience["id"])
            active = queue.active_for_subject(
                session, workspace_id=row.workspace_id, subject_id=row.id
            )
        assert len(active) == 1
        run_syncs(sync_app)


def test_a_sync_stopped_by_an_unexpected_error_is_recorded_and_backs_off(
    sync_app: FastAPI, ws: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    audience = external(
        ws.write,
        {"type": "sql", "query": "SELECT pid FROM profiles"},
        refresh_policy={"mode": "scheduled", "interval_seconds": 3600},
    )

    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("the engine went away with secret-value")

    monkeypatch.setattr(sync_sources, "pull", broken)  # a fault, injected where no check sees it
    run_syncs(sync_app)
    state = sync_of(ws.read, audience["id"])
    assert (state["status"], state["last_error_code"]) == ("failed", "sync_job_failed")
    assert "RuntimeError" in state["last_error"] and "secret" not in state["last_error"]
    runs = ws.read.get(f"/v1/audiences/{audience['id']}/runs").json()["data"]
    assert [run["status"] for run in runs] == ["failed"]
    with sync_app.state.session_factory.begin() as session:
        assert audience["id"] not in {row.id for row in syncs.due(session, now=utcnow())}


def test_metrics_count_a_dead_sync_job_as_failed_as_the_api_does(
    sync_app: FastAPI, ws: Tenant
) -> None:
    audience = external(ws.write, {"type": "sql", "query": "SELECT pid FROM profiles"})
    factory = sync_app.state.session_factory
    with factory() as session:
        before = syncs.totals(session)[2]
    assert ws.write.post(f"/v1/jobs/{audience['sync']['job_id']}/cancel").status_code == 200
    assert sync_of(ws.read, audience["id"])["status"] == "failed"
    with factory() as session:
        after = syncs.totals(session)[2]
    assert after.get("failed", 0) == before.get("failed", 0) + 1
    assert after.get("syncing", 0) == before.get("syncing", 0) - 1


def test_writes_pending_when_the_source_leaves_push_are_dropped(
    sync_app: FastAPI, ws: Tenant
) -> None:
    ws.write.put("/v1/profiles/kept", json={"attributes": {}})
    audience = external(ws.write, {"type": "push"})
    url = f"/v1/audiences/{audience['id']}/members"
    added = ws.write.post(url, json={"action": "add", "ids": ["pushed-1", "pushed-2"]})
    assert added.status_code == 202, added.text
    switched = ws.write.patch(
        f"/v1/audiences/{audience['id']}",
        json=[
            {
                "op": "replace",
                "path": "/source",
                "value": {
                    "type": "sql",
                    "query": "SELECT external_id FROM profiles WHERE external_id = 'kept'",
                },
            }
        ],
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert switched.status_code == 200, switched.text
    run_syncs(sync_app)
    job = ws.read.get(f"/v1/jobs/{added.json()['id']}").json()
    assert job["result"]["indexing_state"] == "dropped", job
    assert "no longer push" in job["result"]["reason"]
    assert members_of(ws.read, audience["id"]) == {"kept"}
    back = ws.write.patch(
        f"/v1/audiences/{audience['id']}",
        json=[{"op": "replace", "path": "/source", "value": {"type": "push"}}],
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert back.status_code == 200, back.text
    run_syncs(sync_app)
    assert members_of(ws.read, audience["id"]) == {"kept"}  # the old write stays dropped


def _trickling(server: FileServer) -> tuple[str, bytes, threading.Event]:
    """A CSV of 60,000 members sent in parts 1.2 s apart, its second half held on a gate."""
    path = f"/trickle-{time.monotonic_ns()}.csv"
    body = b"id\n" + b"".join(b"member-%05d\n" % n for n in range(60_000))
    quarter, half = len(body) // 4, len(body) // 2
    held = threading.Event()
    trickle = ((quarter, 0.0), (quarter + 100_000, 1.2), (half, 1.2))
    server.files[path] = Served(body=body, gate=held, trickle=trickle)
    return path, body, held


def _fetching(client: ApiClient, audience_id: str) -> dict[str, Any]:
    """The audience's sync once its job has reported some bytes fetched."""
    deadline = time.monotonic() + 20
    while True:
        state = sync_of(client, audience_id)
        if state["progress"] is not None and (state["progress"]["bytes_fetched"] or 0) > 0:
            return state
        assert time.monotonic() < deadline, state
        time.sleep(0.02)


def test_cancelling_a_running_sync_stops_it_in_the_middle_of_its_download(
    patient_app: FastAPI, server: FileServer
) -> None:
    """A cancel while the file is still arriving ends the job ``cancelled`` at its next
    checkpoint, before the source has sent the rest; the members are kept and the sync reads
    as failed (``sync_job_failed``)."""
    path, body, held = _trickling(server)
    with make_tenant(patient_app) as tenant:
        audience = external(tenant.write, csv_source(server, path))
        worker = threading.Thread(target=run_syncs, args=(patient_app,))
        worker.start()
        try:
            job_id = _fetching(tenant.read, audience["id"])["job_id"]
            assert tenant.write.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
            worker.join(15)  # the rest of the file is still held back
            stopped_early = not worker.is_alive()
        finally:
            held.set()
            worker.join()
        assert stopped_early
        job = tenant.read.get(f"/v1/jobs/{job_id}").json()
        assert job["state"] == "cancelled", job
        assert 0 < job["counts"]["bytes_fetched"] < len(body)
        state = sync_of(tenant.read, audience["id"])
        assert (state["status"], state["last_error_code"], state["progress"]) == (
            "failed",
            "sync_job_failed",
            None,
        )
        assert members_of(tenant.read, audience["id"]) == set()


def test_a_progress_report_the_busy_database_refuses_is_skipped(
    settings: Settings,
    server: FileServer,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A checkpoint during the download that the database refuses ("database is locked":
    another process holds SQLite's write lock past the busy timeout) is skipped: the sync
    goes on, and records every member once the lock is free."""
    if not (settings.database_url or "").startswith("sqlite:///"):
        pytest.skip("SQLite's write lock held by another process")
    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 200)
    path, _, held = _trickling(server)
    with (
        own_app(
            settings,
            tmp_path_factory.mktemp("busy-app"),
            egress_allow_private=True,
            sync_timeout_seconds=30.0,
            worker_threads=0,
        ) as application,
        make_tenant(application) as tenant,
    ):
        database = application.state.engine.url.database
        audience = external(tenant.write, csv_source(server, path))
        worker = threading.Thread(target=run_syncs, args=(application,))
        worker.start()
        try:
            _fetching(tenant.read, audience["id"])
            other = sqlite3.connect(database, timeout=5)
            other.execute("BEGIN IMMEDIATE")  # the next report (1.2 s on) finds it taken
            time.sleep(2.0)
            other.rollback()
            other.close()
        finally:
            held.set()
            worker.join()
        state = sync_of(tenant.read, audience["id"])
        assert state["status"] == "synced", state
        assert len(members_of(tenant.read, audience["id"])) == 60_000


def test_a_source_pulled_again_shows_the_new_pulls_progress(
    patient_app: FastAPI, server: FileServer
) -> None:
    """A source changed while it was pulled is pulled again: while the new file arrives, the
    sync's progress counts its rows from zero, not the old file's."""
    first = f"/first-{time.monotonic_ns()}.csv"
    held = threading.Event()
    server.files[first] = Served(body=b"id\nold1\nold2\n", gate=held)
    second, body, trickling = _trickling(server)
    with make_tenant(patient_app) as tenant:
        audience = external(tenant.write, csv_source(server, first))
        worker = threading.Thread(target=run_syncs, args=(patient_app,))
        worker.start()
        try:
            while first not in server.requests:
                time.sleep(0.01)
            patched = tenant.write.patch(
                f"/v1/audiences/{audience['id']}",
                json={"source": {"url": server.url(second)}},
                headers={"Content-Type": "application/merge-patch+json"},
            )
            assert patched.status_code == 200, patched.text
            held.set()
            deadline = time.monotonic() + 20
            while True:  # until the second file's length is reported
                progress = sync_of(tenant.read, audience["id"])["progress"]
                if progress is not None and progress["bytes_total"] == len(body):
                    break
                assert time.monotonic() < deadline, progress
                time.sleep(0.02)
        finally:
            held.set()
            trickling.set()
            worker.join()
        assert (progress["rows_read"], progress["rows_total"]) == (0, None)
        assert len(members_of(tenant.read, audience["id"])) == 60_000
