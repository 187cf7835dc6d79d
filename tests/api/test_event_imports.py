"""Event files imported as jobs: CSV (text cells typed like a profile import's) and NDJSON,
gzipped, per-row errors with their row numbers, exact counts, and a file imported twice or a
job run twice storing each event once."""

from __future__ import annotations

import gzip
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from fastapi import FastAPI

from audiences.config import Settings
from audiences.jobs.handlers import HANDLERS, HandlerRegistry
from audiences.jobs.worker import Worker
from audiences.kit.clock import utcnow
from audiences.schemas.api_keys import Role
from audiences.services import event_imports
from tests.client import ApiClient
from tests.factories import client_for, mint_key, run_jobs

HANDLER = "events.import"


@pytest.fixture
def bare(app: FastAPI) -> Iterator[ApiClient]:
    token, _ = mint_key(app, f"evi-{uuid.uuid4().hex[:12]}", Role.WRITE)
    client = client_for(app, token)
    yield client
    client.close()


def _import(
    app: FastAPI, client: ApiClient, content: bytes, content_type: str, **params: Any
) -> dict[str, Any]:
    accepted = client.post(
        "/v1/events/imports",
        content=content,
        headers={"Content-Type": content_type},
        params=params,
    )
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["handler"] == HANDLER
    run_jobs(app, HANDLER)
    job = client.get(f"/v1/jobs/{accepted.json()['id']}").json()
    assert job["state"] == "succeeded", job
    return dict(job)


def _events(client: ApiClient, profile_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/profiles/{profile_id}/events", params={"limit": 200})
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


CSV = b"""profile_id,event,timestamp,amount,plan
a,order,2026-01-01T10:00:00Z,12.5,pro
a,order,2026-01-02T10:00:00Z,7,
b,signup,2026-01-01T09:00:00Z,,free
,order,2026-01-01T10:00:00Z,1,
c,order,yesterday,1,
d,order,2026-01-01T10:00:00Z,lots,
e,order
"""


def test_a_csv_file_writes_good_rows_and_reports_each_bad_one(
    app: FastAPI, bare: ApiClient
) -> None:
    # Undeclared, `amount` would be text: a column takes the type that reads all its cells.
    assert bare.put("/v1/event-properties/amount", json={"type": "float"}).status_code == 201
    job = _import(app, bare, CSV, "text/csv")
    assert job["counts"] == {"rows": 7, "written": 3, "duplicates": 0, "invalid": 4}
    assert [(e["row"], e["code"]) for e in job["errors"]] == [
        (4, "id_missing"),
        (5, "timestamp_invalid"),
        (6, "property_type_mismatch"),
        (7, "row_malformed"),
    ]
    types = {p["name"]: p["type"] for p in bare.get("/v1/event-properties").json()}
    assert types == {"amount": "float", "plan": "string"}
    assert [e["properties"] for e in _events(bare, "a")] == [
        {"amount": 7.0},
        {"amount": 12.5, "plan": "pro"},
    ]
    assert _events(bare, "b")[0]["properties"] == {"plan": "free"}
    report = bare.get(f"/v1/jobs/{job['id']}/errors.csv")
    assert report.status_code == 200
    assert report.text.splitlines()[0] == "row,line,code,message"
    assert len(report.text.splitlines()) == 5
    again = _import(app, bare, CSV, "text/csv")
    assert again["counts"]["written"] == 3, "another upload is another set of events"


def test_an_ndjson_file_gzipped_reads_like_the_api(app: FastAPI, bare: ApiClient) -> None:
    lines = [
        b'{"profile_id": "a", "event": "order", "timestamp": "2026-01-01T00:00:00Z",'
        b' "properties": {"amount": 3, "item": {"sku": "x"}}, "event_id": "o1"}',
        b'{"profile_id": "a", "event": "order", "event_id": "o1"}',
        b"not json",
        b'{"profile_id": "b", "event": "order", "properties": {"amount": "many"}}',
        b"",
        b'{"profile_id": "b", "event": "view", "timestamp": "2026-01-01T00:00:00"}',
    ]
    body = gzip.compress(b"\n".join(lines) + b"\n")
    job = _import(app, bare, body, "application/gzip", format="ndjson")
    assert job["counts"] == {"rows": 5, "written": 1, "duplicates": 1, "invalid": 3}
    assert [(e["row"], e["code"]) for e in job["errors"]] == [
        (3, "row_malformed"),
        (4, "property_type_mismatch"),
        (5, "timestamp_invalid"),
    ]
    [stored] = _events(bare, "a")
    assert stored["properties"] == {"amount": 3, "item.sku": "x"}
    assert stored["event_id"] == "o1"


def test_rows_without_an_event_id_get_one_so_a_rerun_stores_nothing_twice(
    app: FastAPI, bare: ApiClient
) -> None:
    job = _import(app, bare, b"profile_id,event\na,ping\na,ping\n", "text/csv")
    assert job["counts"]["written"] == 2
    ids = [e["event_id"] for e in _events(bare, "a")]
    assert len(set(ids)) == 2 and all(i.endswith((":1", ":2")) for i in ids)


def test_ids_a_file_gives_are_looked_up_on_a_first_run_too(app: FastAPI, bare: ApiClient) -> None:
    posted = bare.post("/v1/events", json={"profile_id": "a", "event": "ping", "event_id": "g"})
    assert posted.status_code == 201, posted.text
    job = _import(app, bare, b"profile_id,event,event_id\na,ping,g\na,ping,\n", "text/csv")
    assert job["counts"] == {"rows": 2, "written": 1, "duplicates": 1, "invalid": 0}
    assert len(_events(bare, "a")) == 2


def test_a_file_the_import_cannot_read_is_refused_at_once(bare: ApiClient) -> None:
    for content in (b"", b"profile_id,name\na,b\n"):
        refused = bare.post(
            "/v1/events/imports", content=content, headers={"Content-Type": "text/csv"}
        )
        assert (refused.status_code, refused.json()["code"]) == (422, "import_file_invalid")


def test_an_ndjson_file_whose_first_record_is_no_event_is_refused_at_once(
    bare: ApiClient,
) -> None:
    for first in (b'{"user": "a", "event": "ping"}', b'{"profile_id": "a", "name": "ping"}'):
        refused = bare.post(
            "/v1/events/imports",
            content=first + b"\n",
            headers={"Content-Type": "application/x-ndjson"},
        )
        assert (refused.status_code, refused.json()["code"]) == (422, "import_file_invalid")
    assert bare.get("/v1/profiles/a").status_code == 404


def test_a_parquet_file_keeps_its_types(app: FastAPI, bare: ApiClient, tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    con = duckdb.connect()
    con.execute(
        f"""COPY (SELECT * FROM (VALUES
            ('a', 'order', TIMESTAMP '2026-01-01 10:00:00', 12.5::DECIMAL(6, 2), 2, 'o1'),
            ('a', 'order', TIMESTAMP '2026-01-02 10:00:00', NULL, 3, NULL),
            (NULL, 'order', TIMESTAMP '2026-01-02 10:00:00', 1, 1, NULL)
        ) AS t(profile_id, event, "timestamp", amount, qty, event_id))
        TO '{path}' (FORMAT parquet)"""
    )
    con.close()
    job = _import(app, bare, path.read_bytes(), "application/vnd.apache.parquet")
    assert job["counts"] == {"rows": 3, "written": 2, "duplicates": 0, "invalid": 1}
    assert [(e["row"], e["code"]) for e in job["errors"]] == [(3, "id_missing")]
    types = {p["name"]: p["type"] for p in bare.get("/v1/event-properties").json()}
    assert types == {"amount": "float", "qty": "integer"}
    newest, oldest = _events(bare, "a")
    assert oldest["timestamp"] == "2026-01-01T10:00:00Z", "a time without a zone is UTC"
    assert (oldest["properties"], oldest["event_id"]) == ({"amount": 12.5, "qty": 2}, "o1")
    assert newest["properties"] == {"qty": 3}
    refused = bare.post(
        "/v1/events/imports",
        content=b"profile_id,event\na,b\n",
        params={"format": "parquet"},
        headers={"Content-Type": "application/octet-stream"},
    )
    assert (refused.status_code, refused.json()["code"]) == (422, "import_file_invalid")


def _stopped_after_a_chunk(
    app: FastAPI, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> Worker:
    """Run the queued import with a worker that shuts down once it has written a chunk,
    before the checkpoint after it (which sees the shutdown and gives the job back); the
    worker, ready to run the job again, is returned."""
    stopping = threading.Event()
    worker = Worker(
        session_factory=app.state.session_factory,
        settings=settings,
        registry=HandlerRegistry({HANDLER: HANDLERS.get(HANDLER)}, frozenset({HANDLER})),
        runtime=app.state.runtime,
        stopping=stopping,
    )
    write_chunk = event_imports.write_chunk

    def write_then_stop(*args: Any, **kwargs: Any) -> event_imports.Outcome:
        outcome = write_chunk(*args, **kwargs)
        stopping.set()
        return outcome

    monkeypatch.setattr(event_imports, "write_chunk", write_then_stop)
    assert worker.run_once()
    monkeypatch.undo()
    stopping.clear()
    return worker


def test_an_import_stopped_before_its_checkpoint_stores_each_row_once_when_resumed(
    app: FastAPI, bare: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker shutting down after writing a chunk, before checkpointing it, gives the job
    back uncounted: the next attempt is attempt 1 again, and must still look up the ids the
    first wrote (a first run takes its generated ids as new without looking)."""
    posted = bare.post("/v1/events", json={"profile_id": "a", "event": "ping", "event_id": "g"})
    assert posted.status_code == 201, posted.text
    body = b"profile_id,event,event_id\na,ping,g\n" + b"a,ping,\n" * 4
    accepted = bare.post("/v1/events/imports", content=body, headers={"Content-Type": "text/csv"})
    assert accepted.status_code == 202, accepted.text
    worker = _stopped_after_a_chunk(
        app, app.state.settings.model_copy(update={"import_chunk_rows": 2}), monkeypatch
    )
    job = bare.get(f"/v1/jobs/{accepted.json()['id']}").json()
    assert (job["state"], job["attempts"], job["progress"]["processed"]) == ("queued", 0, 0)
    assert worker.run_once()
    job = bare.get(f"/v1/jobs/{accepted.json()['id']}").json()
    assert job["state"] == "succeeded", job
    assert job["counts"] == {"rows": 5, "written": 3, "duplicates": 2, "invalid": 0}
    ids = [e["event_id"] for e in _events(bare, "a")]
    assert len(ids) == 5 and len(set(ids)) == 5, "the posted event and the file's 4 new rows"


def test_an_import_resumed_after_the_dedupe_window_still_stores_each_row_once(
    app: FastAPI, bare: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Window 1 hour; the attempt that wrote the chunk stops before its checkpoint, the next
    one writes at +65 minutes (a job's backoff reaches an hour): the ids are looked up from the
    window before the job was queued, not only the hour before the retry (the reviewer's
    reproducer: 8 events stored instead of 4)."""
    body = b"profile_id,event,event_id\na,ping,given\n" + b"a,ping,\n" * 3
    accepted = bare.post("/v1/events/imports", content=body, headers={"Content-Type": "text/csv"})
    assert accepted.status_code == 202, accepted.text
    settings = app.state.settings.model_copy(
        update={"import_chunk_rows": 4, "event_dedupe_window_hours": 1}
    )
    worker = _stopped_after_a_chunk(app, settings, monkeypatch)
    later = utcnow() + timedelta(hours=1, minutes=5)
    monkeypatch.setattr("audiences.jobs.event_jobs.utcnow", lambda: later)
    assert worker.run_once()
    job = bare.get(f"/v1/jobs/{accepted.json()['id']}").json()
    assert job["state"] == "succeeded", job
    assert job["counts"] == {"rows": 4, "written": 0, "duplicates": 4, "invalid": 0}
    ids = [e["event_id"] for e in _events(bare, "a")]
    assert len(ids) == 4 and len(set(ids)) == 4, ids
