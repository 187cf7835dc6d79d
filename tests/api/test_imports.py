"""File imports into static audiences: formats, gzip, forms, row errors, counts, limits."""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from audiences.config import Settings
from tests.api.test_member_writes import (
    died_after_applying,
    members_of,
    run_jobs,
    static_audience,
)
from tests.client import ApiClient
from tests.factories import Tenant, client_for, mint_key, own_app


def upload(
    client: ApiClient,
    audience_id: str,
    content: bytes,
    content_type: str = "text/csv",
    **params: Any,
) -> dict[str, Any]:
    """POST a file as the raw body; the accepted job."""
    response = client.post(
        f"/v1/audiences/{audience_id}/imports",
        content=content,
        headers={"Content-Type": content_type},
        params=params,
    )
    assert response.status_code == 202, response.text
    return dict(response.json())


def finished(app: FastAPI, client: ApiClient, job_id: str) -> dict[str, Any]:
    """Run the queued jobs; the job, which must have succeeded."""
    run_jobs(app)
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["state"] == "succeeded", job
    return dict(job)


def test_csv_import_keeps_good_rows_and_reports_each_bad_one(app: FastAPI, tenant: Tenant) -> None:
    audience = static_audience(tenant.write)
    rows = [b"id,plan", b"a,pro", b"b,free", b"a,pro", b"x" * 600 + b",free", b"\xff\xfe,free"]
    rows += [b"c,free,extra", b'"broken,free', b"d,team"]
    job = upload(tenant.write, audience["id"], b"\n".join(rows) + b"\n")
    assert job["result"]["indexing_state"] == "in_progress"
    done = finished(app, tenant.read, job["id"])
    assert members_of(tenant.read, audience["id"]) == {"a", "b"}
    counts = done["counts"]
    assert (counts["rows"], counts["invalid"], counts["duplicates"]) == (7, 4, 1)
    assert (counts["added"], done["result"]["indexing_state"]) == (2, "applied")
    codes = {error["row"]: error["code"] for error in done["errors"]}
    assert codes == {4: "id_too_long", 5: "invalid_utf8", 6: "row_malformed", 7: "row_malformed"}
    assert done["progress"] == {"processed": 7, "total": 7, "percent": 100.0}
    errors = tenant.read.get(f"/v1/jobs/{job['id']}/errors.csv")
    assert errors.headers["content-type"].startswith("text/csv")
    lines = errors.text.splitlines()
    assert lines[0] == "row,line,code,message"
    assert [line.split(",")[:3] for line in lines[1:]] == [
        ["4", "5", "id_too_long"],
        ["5", "6", "invalid_utf8"],
        ["6", "7", "row_malformed"],
        ["7", "8", "row_malformed"],
    ]


def test_a_broken_quote_is_an_error_and_the_rows_before_it_are_kept(
    app: FastAPI, tenant: Tenant
) -> None:
    audience = static_audience(tenant.write)
    job = upload(tenant.write, audience["id"], b'id\na\n"b\nc\n')
    done = finished(app, tenant.read, job["id"])
    assert members_of(tenant.read, audience["id"]) == {"a"}
    assert [error["code"] for error in done["errors"]] == ["row_malformed"]


def test_gzip_tsv_ndjson_text_and_forms(app: FastAPI, tenant: Tenant) -> None:
    audience = static_audience(tenant.write)
    packed = gzip.compress(b"email\tid\nq@x\tg1\nr@x\tg2\n")
    upload(tenant.write, audience["id"], packed, "application/gzip", format="tsv")
    upload(tenant.write, audience["id"], b"t1\r\nt2\n\n", "text/plain")
    ndjson = b'{"id": "n1", "plan": "pro"}\n{"id": 7}\nnot json\n'
    upload(tenant.write, audience["id"], ndjson, "application/x-ndjson", attributes="plan")
    form = tenant.write.post(
        f"/v1/audiences/{audience['id']}/imports",
        files={"file": ("list.csv.gz", gzip.compress(b"id\nf1\n"), "application/gzip")},
        data={"ignored": "yes"},
    )
    assert form.status_code == 202, form.text
    run_jobs(app)
    assert members_of(tenant.read, audience["id"]) == {"g1", "g2", "t1", "t2", "n1", "7", "f1"}
    assert tenant.read.get("/v1/profiles/n1").json()["attributes"] == {"plan": "pro"}


def test_attributes_are_typed_by_the_schema_and_a_bad_value_is_a_row_error(
    app: FastAPI, tenant: Tenant
) -> None:
    audience = static_audience(tenant.write)
    content = b'id,age,country,tags\nu1,41,FR,"[""vip""]"\nu2,old,US,\n'
    job = upload(tenant.write, audience["id"], content, attributes="*")
    done = finished(app, tenant.read, job["id"])
    assert members_of(tenant.read, audience["id"]) == {"u1"}
    profile = tenant.read.get("/v1/profiles/u1").json()
    assert profile["attributes"] == {"age": 41, "country": "FR", "tags": ["vip"]}
    assert [(e["row"], e["code"]) for e in done["errors"]] == [(2, "attribute_type_mismatch")]


def test_new_attribute_columns_are_inferred_from_csv_text_and_ndjson_values(
    app: FastAPI, tenant: Tenant
) -> None:
    """Issue #11: file imports infer undeclared attributes as profile writes do. CSV cells are
    text: a column takes the narrowest type that reads every one of its values, and a number
    with a leading zero (a code) stays text."""
    audience = static_audience(tenant.write)
    content = (
        b"id,visits,zip,ratio,member_since,active,city\n"
        b"u1,3,01234,0.5,2024-01-02,true,Paris\n"
        b"u2,12,75001,2,2023-05-06,FALSE,\n"
    )
    finished(app, tenant.read, upload(tenant.write, audience["id"], content, attributes="*")["id"])
    ndjson = b'{"id": "n1", "addr": {"city": "Paris"}, "score": 1.5, "later": null}\n'
    job = upload(tenant.write, audience["id"], ndjson, "application/x-ndjson", attributes="*")
    finished(app, tenant.read, job["id"])
    types = {a["name"]: a["type"] for a in tenant.read.get("/v1/attributes").json()}
    assert {name: types.get(name) for name in ("visits", "zip", "ratio", "member_since")} == {
        "visits": "integer",
        "zip": "string",
        "ratio": "float",
        "member_since": "date",
    }
    assert (types["active"], types["city"], types["addr.city"], types["score"]) == (
        "boolean",
        "string",
        "string",
        "float",
    )
    assert "later" not in types
    assert tenant.read.get("/v1/profiles/u1").json()["attributes"]["zip"] == "01234"
    # A dotted column picks the nested value too.
    named = (
        b'{"id": "n2", "addr": {"city": "Lyon", "zip": "69001"}}\n'
        b'{"id": "n3", "addr.city": "Nice"}\n'
    )
    job = upload(
        tenant.write, audience["id"], named, "application/x-ndjson", attributes="addr.city"
    )
    finished(app, tenant.read, job["id"])
    assert tenant.read.get("/v1/profiles/n2").json()["attributes"] == {"addr.city": "Lyon"}
    assert tenant.read.get("/v1/profiles/n3").json()["attributes"] == {"addr.city": "Nice"}
    for rule, size in (("visits > 5", 1), ("addr.city = 'Paris' OR city = 'Paris'", 2)):
        preview = tenant.read.post("/v1/audiences/preview", json={"rule": rule})
        assert preview.status_code == 200, preview.text
        assert preview.json()["size"] == size, rule


def test_a_strict_workspace_refuses_undeclared_columns_row_by_row(
    app: FastAPI, tenant: Tenant
) -> None:
    assert (
        tenant.admin.put("/v1/workspace/settings", json={"strict_attributes": True}).status_code
        == 200
    )
    audience = static_audience(tenant.write)
    content = b"id,age,color\nu1,41,\nu2,42,red\n"
    done = finished(
        app, tenant.read, upload(tenant.write, audience["id"], content, attributes="*")["id"]
    )
    assert members_of(tenant.read, audience["id"]) == {"u1"}
    assert [(e["row"], e["code"]) for e in done["errors"]] == [(2, "attribute_undeclared")]
    assert "color" not in {a["name"] for a in tenant.read.get("/v1/attributes").json()}


def test_replace_swaps_the_whole_set_and_remove_removes(app: FastAPI, tenant: Tenant) -> None:
    audience = static_audience(tenant.write)
    finished(app, tenant.read, upload(tenant.write, audience["id"], b"id\na\nb\nc\n")["id"])
    job = upload(tenant.write, audience["id"], b"id\nc\nd\n", mode="replace")
    done = finished(app, tenant.read, job["id"])
    assert members_of(tenant.read, audience["id"]) == {"c", "d"}
    assert (done["counts"]["added"], done["counts"]["removed"], done["counts"]["unchanged"]) == (
        1,
        2,
        1,
    )
    finished(
        app,
        tenant.read,
        upload(tenant.write, audience["id"], b"c\n", "text/plain", mode="remove")["id"],
    )
    assert members_of(tenant.read, audience["id"]) == {"d"}
    runs = tenant.read.get(f"/v1/audiences/{audience['id']}/runs").json()["data"]
    assert [run["trigger"] for run in runs] == ["import", "import", "import"]


@pytest.mark.parametrize(
    ("content", "params", "message"),
    [
        (b"", {}, "empty"),
        (b"email\nx@y\n", {"id_column": "user_id"}, "user_id"),
        (b"id\na\n", {"attributes": "plan"}, "plan"),
    ],
)
def test_a_file_that_cannot_be_imported_is_refused_up_front(
    app: FastAPI, tenant: Tenant, content: bytes, params: dict[str, str], message: str
) -> None:
    audience = static_audience(tenant.write)
    response = tenant.write.post(
        f"/v1/audiences/{audience['id']}/imports",
        content=content,
        headers={"Content-Type": "text/csv"},
        params=params,
    )
    assert (response.status_code, response.json()["code"]) == (422, "import_file_invalid")
    assert message in response.json()["detail"]
    folder = Path(app.state.settings.data_dir) / "imports" / tenant.workspace_id
    assert not folder.exists() or list(folder.iterdir()) == []


@pytest.mark.parametrize(
    ("content", "content_type", "params"),
    [
        (b"\xff\nabc\n", "text/csv", {}),
        (b"\xff\nabc\n", "text/tab-separated-values", {}),
        (gzip.compress(b"\xff\nabc\n"), "application/gzip", {"format": "csv"}),
        ("id,plan\nabc,pro\n".encode("utf-16"), "text/csv", {"attributes": "*"}),
    ],
    ids=["csv", "tsv", "gzip", "utf-16"],
)
def test_a_header_that_is_not_utf8_is_refused_up_front(
    app: FastAPI, tenant: Tenant, content: bytes, content_type: str, params: dict[str, str]
) -> None:
    audience = static_audience(tenant.write)
    response = tenant.write.post(
        f"/v1/audiences/{audience['id']}/imports",
        content=content,
        headers={"Content-Type": content_type},
        params=params,
    )
    assert (response.status_code, response.json()["code"]) == (422, "import_file_invalid")
    assert "UTF-8" in response.json()["detail"]
    folder = Path(app.state.settings.data_dir) / "imports" / tenant.workspace_id
    assert not folder.exists() or list(folder.iterdir()) == []


def test_idempotency_key_returns_the_same_import(app: FastAPI, tenant: Tenant) -> None:
    audience = static_audience(tenant.write)
    url = f"/v1/audiences/{audience['id']}/imports"
    headers = {"Content-Type": "text/csv", "Idempotency-Key": "upload-1"}
    first = tenant.write.post(url, content=b"id\na\n", headers=headers)
    again = tenant.write.post(url, content=b"id\na\n", headers=headers)
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    other = tenant.write.post(url, content=b"id\nb\n", headers=headers)
    assert (other.status_code, other.json()["code"]) == (422, "idempotency_key_reused")


def test_uploads_over_the_limit_are_refused_while_streaming(
    settings: Settings, tmp_path: Path
) -> None:
    with own_app(settings, tmp_path, max_upload_bytes=4096, worker_threads=0) as small:
        token, _ = mint_key(small, "uploads", "admin")  # type: ignore[arg-type]
        client = client_for(small, token)
        try:
            created = client.post("/v1/audiences", json={"key": "l", "name": "l", "kind": "static"})
            url = f"/v1/audiences/{created.json()['id']}/imports"
            chunks = (b"x" * 1024 + b"\n" for _ in range(10))
            response = client.post(url, content=chunks, headers={"Content-Type": "text/plain"})
            assert (response.status_code, response.json()["code"]) == (413, "body_too_large")
            assert list((tmp_path / "data" / "imports").rglob("upload")) == []
            fine = client.post(url, content=b"a\n" * 1000, headers={"Content-Type": "text/plain"})
            assert fine.status_code == 202
        finally:
            client.close()


def test_an_import_run_again_after_it_applied_keeps_its_result_and_counts(
    app: FastAPI, tenant: Tenant
) -> None:
    audience = static_audience(tenant.write)
    job = upload(tenant.write, audience["id"], b"id\na\nb\nbad\x01\n")
    first = finished(app, tenant.read, job["id"])
    died_after_applying(app, job["id"])
    again = finished(app, tenant.read, job["id"])
    assert again["result"] == first["result"]
    assert again["counts"] == first["counts"]
    assert members_of(tenant.read, audience["id"]) == {"a", "b"}


@pytest.mark.parametrize(
    "ending",
    [b"", b"\r\n--B", b"\r\n--B\r\n", b"\r\n--B-"],
    ids=["no boundary", "boundary without end", "next part never starts", "half an end"],
)
def test_a_form_cut_short_is_400_and_imports_nothing(
    app: FastAPI, tenant: Tenant, ending: bytes
) -> None:
    """Issue #11: a multipart body without its closing boundary was imported as if complete."""
    audience = static_audience(tenant.write)
    head = b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n\r\n'
    response = tenant.write.post(
        f"/v1/audiences/{audience['id']}/imports",
        content=head + b"id\na\nb" + ending,
        headers={"Content-Type": "multipart/form-data; boundary=B"},
    )
    assert (response.status_code, response.json()["code"]) == (400, "malformed_multipart")
    folder = Path(app.state.settings.data_dir) / "imports" / tenant.workspace_id
    assert not folder.exists() or list(folder.rglob("upload")) == []
    whole = head + b"id\na\nb\r\n--B--\r\n"
    complete = tenant.write.post(
        f"/v1/audiences/{audience['id']}/imports",
        content=whole,
        headers={"Content-Type": "multipart/form-data; boundary=B"},
    )
    assert complete.status_code == 202, complete.text
    run_jobs(app)
    assert members_of(tenant.read, audience["id"]) == {"a", "b"}


def test_the_csv_export_defuses_ids_a_spreadsheet_would_run(app: FastAPI, tenant: Tenant) -> None:
    """Issue #11: an id such as ``=HYPERLINK(…)`` ran as a formula when the export was opened."""
    audience = static_audience(tenant.write)
    ids = ["=1+1", "-5", "@SUM(A1)", "+1", "plain", "a,b", 'say "hi"']
    finished(
        app,
        tenant.read,
        upload(tenant.write, audience["id"], "\n".join(ids).encode(), "text/plain")["id"],
    )
    url = f"/v1/audiences/{audience['id']}/export"

    def cells(**params: Any) -> set[str]:
        response = tenant.read.get(url, params=params)
        assert response.status_code == 200, response.text
        rows = list(csv.reader(io.StringIO(response.text)))
        assert rows[0] == ["id"]
        return {row[0] for row in rows[1:]}

    assert cells() == {"'=1+1", "'-5", "'@SUM(A1)", "'+1", "plain", "a,b", 'say "hi"'}
    assert cells(raw="true") == set(ids)
    ndjson = tenant.read.get(url, params={"format": "ndjson"}).text.splitlines()
    assert {json.loads(line)["id"] for line in ndjson} == set(ids)


def test_a_time_utc_cannot_hold_is_a_row_error(app: FastAPI, tenant: Tenant) -> None:
    """Converting such a time to UTC overflows: the row is refused as a type mismatch."""
    assert tenant.admin.put("/v1/attributes/seen", json={"type": "timestamp"}).status_code == 201
    audience = static_audience(tenant.write)
    content = b"id,seen\nu1,2026-01-01T00:00:00Z\nu2,9999-12-31T23:00:00-02:00\n"
    job = upload(tenant.write, audience["id"], content, attributes="*")
    done = finished(app, tenant.read, job["id"])
    assert members_of(tenant.read, audience["id"]) == {"u1"}
    assert [(e["row"], e["code"]) for e in done["errors"]] == [(2, "attribute_type_mismatch")]
