"""Pulling a file source from a real loopback server: the SSRF guard before each request and
redirect, redirects, the size cap on a stream without a length, and temporary files."""

from __future__ import annotations

import gzip
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from audiences.engines.duckdb import DuckDBEngine
from audiences.errors import Unprocessable
from audiences.membership.cache import BitmapCache
from audiences.schemas.attributes import AttributeType
from audiences.schemas.syncs import (
    PathFileSource,
    SourceType,
    SqlSource,
    SyncFormat,
    UrlFileSource,
)
from audiences.services import sync_sources
from audiences.services.import_formats import Row
from audiences.services.runtime import Runtime
from audiences.services.sync_progress import Tracker
from audiences.services.sync_rules import SourceRules
from audiences.services.sync_sources import SQL_FAILED, SyncFailed, pull
from tests.api.test_syncs import FileServer, Served
from tests.services.test_egress import Dns

WS = "ws"


@pytest.fixture(scope="module")
def server() -> Iterator[FileServer]:
    """A loopback file server for this module."""
    running = FileServer()
    yield running
    running.close()


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    """A runtime on a fresh DuckDB file."""
    engine = DuckDBEngine(tmp_path / "engine")
    yield Runtime(profiles=engine, bitmaps=BitmapCache(1 << 20))
    engine.close()


def source(url: str) -> UrlFileSource:
    """A CSV source at ``url``."""
    return UrlFileSource(type=SourceType.FILE, url=url, format=SyncFormat.CSV)


def fetch(runtime: Runtime, url: str, rules: SourceRules) -> set[str]:
    """The external ids a pull of ``url`` names."""
    problems: list[Row] = []
    members, _ = pull(
        runtime, workspace_id=WS, source=source(url), rules=rules, on_row_error=problems.append
    )
    return {e for e in runtime.profiles.external_ids_for(WS, list(members)) if e is not None}


def test_a_loopback_url_is_refused_before_any_request_unless_allowed(
    runtime: Runtime, server: FileServer, tmp_path: Path
) -> None:
    server.files["/guarded.csv"] = Served(body=b"id\na\n")
    url = server.url("/guarded.csv")
    before = len(server.requests)
    with pytest.raises(SyncFailed) as refused:
        fetch(runtime, url, SourceRules(allow_private=False, work_dir=tmp_path / "work"))
    assert refused.value.code == "url_not_allowed"
    assert len(server.requests) == before  # nothing was sent
    assert fetch(runtime, url, SourceRules(allow_private=True, work_dir=tmp_path / "work")) == {"a"}
    assert list((tmp_path / "work").iterdir()) == []  # the temporary copy is gone


def test_redirects_are_followed_a_few_times_only(
    runtime: Runtime, server: FileServer, tmp_path: Path
) -> None:
    rules = SourceRules(allow_private=True, work_dir=tmp_path / "work")
    server.files["/final.csv"] = Served(body=b"id\nr1\n")
    server.files["/hop.csv"] = Served(302, headers={"Location": "/final.csv"})
    assert fetch(runtime, server.url("/hop.csv"), rules) == {"r1"}
    server.files["/loop.csv"] = Served(302, headers={"Location": "/loop.csv"})
    with pytest.raises(SyncFailed) as looped:
        fetch(runtime, server.url("/loop.csv"), rules)
    assert looped.value.code == "sync_fetch_failed"


def test_a_redirect_to_a_name_that_cannot_be_sent_to_is_refused(
    runtime: Runtime, server: FileServer, tmp_path: Path
) -> None:
    """A ``Location`` whose host has a label over 63 characters fails the sync with the
    guard's code, not a crash of the resolver."""
    rules = SourceRules(allow_private=True, work_dir=tmp_path / "work")
    target = f"http://{'h' * 64}.example.com/list.csv"
    server.files["/far.csv"] = Served(302, headers={"Location": target})
    with pytest.raises(SyncFailed) as refused:
        fetch(runtime, server.url("/far.csv"), rules)
    assert refused.value.code == "url_not_allowed"


def test_a_redirect_to_a_location_that_is_no_url_fails_the_sync(
    runtime: Runtime, server: FileServer, tmp_path: Path
) -> None:
    rules = SourceRules(allow_private=True, work_dir=tmp_path / "work")
    server.files["/odd.csv"] = Served(302, headers={"Location": "http://[::1/x"})
    with pytest.raises(SyncFailed) as failed:
        fetch(runtime, server.url("/odd.csv"), rules)
    assert failed.value.code == "sync_fetch_failed"


def test_a_compressed_source_is_read_decoded_and_capped_on_its_decoded_size(
    runtime: Runtime, server: FileServer, tmp_path: Path
) -> None:
    """A gzip-encoded answer is decoded; the cap counts what it decodes to, so a small
    download that expands past it (a decompression bomb) fails without being held whole."""
    body = b"id\n" + b"".join(b"id-%05d\n" % n for n in range(1000))
    server.files["/list.csv"] = Served(
        body=gzip.compress(body), headers={"Content-Encoding": "gzip"}
    )
    rules = SourceRules(allow_private=True, work_dir=tmp_path / "work")
    assert len(fetch(runtime, server.url("/list.csv"), rules)) == 1000
    capped = SourceRules(allow_private=True, max_bytes=len(body) - 1, work_dir=tmp_path / "work")
    with pytest.raises(SyncFailed) as refused:
        fetch(runtime, server.url("/list.csv"), capped)
    assert refused.value.code == "sync_too_large"


def test_the_cap_counts_the_bytes_when_no_length_is_given(
    runtime: Runtime, server: FileServer, tmp_path: Path
) -> None:
    rules = SourceRules(allow_private=True, max_bytes=2048, work_dir=tmp_path / "work")
    body = b"id\n" + b"".join(b"id-%05d\n" % n for n in range(1000))
    server.files["/big.csv"] = Served(body=body, chunked=True)
    with pytest.raises(SyncFailed) as refused:
        fetch(runtime, server.url("/big.csv"), rules)
    assert refused.value.code == "sync_too_large"
    assert list((tmp_path / "work").iterdir()) == []


def test_a_closed_port_fails_the_fetch(runtime: Runtime, tmp_path: Path) -> None:
    rules = SourceRules(allow_private=True, work_dir=tmp_path / "work")
    with pytest.raises(SyncFailed) as failed:
        fetch(runtime, "http://127.0.0.1:9/x.csv", rules)
    assert failed.value.code == "sync_fetch_failed"


def test_a_sql_source_failing_on_the_data_records_no_value(runtime: Runtime) -> None:
    runtime.profiles.ensure_attributes(WS, {"plan": AttributeType.STRING})
    runtime.profiles.upsert_profiles(WS, [("private-value-1", {"plan": "pro"})])
    query = "SELECT external_id FROM profiles WHERE CAST(external_id AS INT) = 1"
    sql = SqlSource(type=SourceType.SQL, query=query)
    with pytest.raises(SyncFailed) as failed:
        pull(runtime, workspace_id=WS, source=sql, rules=SourceRules(), on_row_error=print)
    assert failed.value.code == "engine_query_failed"
    assert failed.value.message == SQL_FAILED
    assert "private-value" not in failed.value.message


def test_a_file_url_rebound_to_loopback_after_the_check_is_not_fetched(
    runtime: Runtime, server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dns = Dns(monkeypatch)
    dns.answers["list.test"] = [["93.184.216.34"], ["127.0.0.1"]]  # public to a check only
    server.files["/rebound.csv"] = Served(body=b"id\ninternal\n")
    port = server.server.server_address[1]
    rules = SourceRules(allow_private=False, work_dir=tmp_path / "work")
    with pytest.raises(SyncFailed) as failed:
        fetch(runtime, f"http://list.test:{port}/rebound.csv", rules)
    assert failed.value.code == "sync_fetch_failed"
    assert "/rebound.csv" not in server.requests


def test_a_sync_failure_is_in_the_error_tree() -> None:
    failure = SyncFailed("the source answered HTTP 404", code="sync_fetch_failed")
    assert isinstance(failure, Unprocessable)
    assert (failure.status, failure.code, failure.message) == (
        422,
        "sync_fetch_failed",
        "the source answered HTTP 404",
    )


@pytest.mark.parametrize("fmt", [SyncFormat.CSV, SyncFormat.NDJSON, SyncFormat.PARQUET])
def test_a_pull_tells_its_tracker_bytes_then_rows(
    runtime: Runtime,
    server: FileServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fmt: SyncFormat,
) -> None:
    """Bytes fetched grow to the file's length first; then the rows it holds are known (CSV
    and NDJSON: counted from its lines) before rows are read, and rows read grow to them."""
    monkeypatch.setattr(sync_sources, "RESOLVE_ROWS", 100)
    ids = [f"t{n}" for n in range(1000)]
    body = _file_of(ids, fmt, tmp_path)
    server.files[f"/tracked.{fmt.value}"] = Served(body=body)
    seen: list[tuple[int, int | None, int, int | None]] = []

    def report(tracker: Tracker) -> None:
        seen.append(
            (tracker.bytes_fetched, tracker.bytes_total, tracker.rows_read, tracker.rows_total)
        )

    members, read = pull(
        runtime,
        workspace_id=WS,
        source=UrlFileSource(
            type=SourceType.FILE, url=server.url(f"/tracked.{fmt.value}"), format=fmt
        ),
        rules=SourceRules(allow_private=True, work_dir=tmp_path / "work"),
        on_row_error=lambda row: None,
        tracker=Tracker(report=report, every=0.0),
    )
    assert read == len(members) == 1000
    assert seen[0] == (0, len(body), 0, None)
    assert seen[-1] == (len(body), len(body), 1000, 1000)
    fetched = [entry[0] for entry in seen]
    assert fetched == sorted(fetched) and len(body) in fetched
    rows = [entry[2] for entry in seen]
    assert rows == sorted(rows)
    if fmt is not SyncFormat.PARQUET:
        first_row = next(i for i, entry in enumerate(seen) if entry[2] > 0)
        assert seen[first_row - 1][3] == 1000  # counted before any row was read
    if fmt is SyncFormat.NDJSON:  # read by Python, 100 ids an engine call
        assert [r for r in dict.fromkeys(rows) if r] == list(range(100, 1001, 100))


def test_a_source_that_trickles_its_bytes_is_stopped_at_the_deadline(
    runtime: Runtime, server: FileServer, tmp_path: Path
) -> None:
    """Each part arrives well within a read's timeout, but the whole takes longer than the
    sync may: the fetch stops at its deadline, having copied (and told its tracker, which is
    where a job sees a cancel) what had arrived, not after the source's last byte."""
    body = b"id\n" + b"".join(b"t-%03d\n" % n for n in range(40))
    parts = tuple((end, 0.1) for end in range(6, len(body), 6))
    server.files["/trickle.csv"] = Served(body=body, trickle=parts)
    seen: list[int] = []
    with pytest.raises(SyncFailed) as failed:
        pull(
            runtime,
            workspace_id=WS,
            source=source(server.url("/trickle.csv")),
            rules=SourceRules(allow_private=True, timeout_seconds=0.5, work_dir=tmp_path / "w"),
            on_row_error=lambda row: None,
            tracker=Tracker(report=lambda t: seen.append(t.bytes_fetched), every=0.0),
        )
    assert failed.value.code == "sync_timeout"
    assert 0 < max(seen) < len(body)


def test_a_compressed_source_that_decodes_to_nothing_is_cut_at_the_deadline(
    runtime: Runtime, server: FileServer, tmp_path: Path
) -> None:
    """A gzip header whose file name never ends decodes to nothing however many bytes come,
    so the reader never hands a chunk back: the connection is cut at the deadline."""
    header = b"\x1f\x8b\x08\x08" + bytes(6)  # gzip, with a file name (FNAME) to follow
    body = header + b"n" * 20_000
    parts = tuple((end, 0.05) for end in range(len(header) + 100, len(body), 100))
    gate = threading.Event()
    server.files["/endless.csv"] = Served(
        body=body, trickle=parts, gate=gate, chunked=True, headers={"Content-Encoding": "gzip"}
    )
    outcome: list[BaseException | None] = []

    def fetch_it() -> None:
        rules = SourceRules(
            allow_private=True, timeout_seconds=0.5, max_bytes=1000, work_dir=tmp_path / "w"
        )
        try:
            fetch(runtime, server.url("/endless.csv"), rules)
        except SyncFailed as error:
            outcome.append(error)
        else:
            outcome.append(None)

    reader = threading.Thread(target=fetch_it, daemon=True)
    reader.start()
    reader.join(5)  # the source sends a part every 50 ms for 10 s
    gate.set()
    assert not reader.is_alive(), "the fetch ran on past its deadline"
    [error] = outcome
    assert isinstance(error, SyncFailed) and error.code == "sync_timeout"


def test_a_directory_under_the_sync_folder_is_refused_and_nothing_is_left_open(
    runtime: Runtime, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    (root / WS / "folder.csv").mkdir(parents=True)
    opened = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        with pytest.raises(SyncFailed) as refused:
            pull(
                runtime,
                workspace_id=WS,
                source=PathFileSource(
                    type=SourceType.FILE,
                    path=str(root / WS / "folder.csv"),
                    format=SyncFormat.CSV,
                ),
                rules=SourceRules(root=root, work_dir=tmp_path / "w").for_workspace(WS),
                on_row_error=lambda row: None,
            )
        assert refused.value.code == "sync_fetch_failed"
    assert len(os.listdir("/proc/self/fd")) < opened + 20


def test_a_named_pipe_under_the_sync_folder_is_refused_not_waited_on(
    runtime: Runtime, tmp_path: Path
) -> None:
    """A pipe nobody writes to would hold the worker for ever: refused as not a file."""
    root = tmp_path / "root"
    (root / WS).mkdir(parents=True)
    os.mkfifo(root / WS / "pipe.csv")
    outcome: list[BaseException | None] = []

    def read() -> None:
        try:
            pull(
                runtime,
                workspace_id=WS,
                source=PathFileSource(
                    type=SourceType.FILE, path=str(root / WS / "pipe.csv"), format=SyncFormat.CSV
                ),
                rules=SourceRules(root=root, work_dir=tmp_path / "w").for_workspace(WS),
                on_row_error=lambda row: None,
            )
        except SyncFailed as error:
            outcome.append(error)
        else:
            outcome.append(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    if reader.is_alive():  # unblock the reader, then fail
        with open(root / WS / "pipe.csv", "wb"):
            pass
        reader.join(10)
        pytest.fail("the pull waited on the pipe")
    [error] = outcome
    assert isinstance(error, SyncFailed) and error.code == "sync_fetch_failed"
    assert "not a regular file" in error.detail


def test_a_sql_pull_tells_its_rows_at_the_end(runtime: Runtime) -> None:
    """A query's rows are known when it answers: read and total at once."""
    runtime.profiles.ensure_profiles(WS, ["q1", "q2"])
    seen: list[tuple[int, int | None]] = []
    pull(
        runtime,
        workspace_id=WS,
        source=SqlSource(type=SourceType.SQL, query="SELECT external_id FROM profiles"),
        rules=SourceRules(dialect="duckdb"),
        on_row_error=lambda row: None,
        tracker=Tracker(report=lambda t: seen.append((t.rows_read, t.rows_total)), every=0.0),
    )
    assert seen == [(2, 2)]


def _file_of(ids: list[str], fmt: SyncFormat, folder: Path) -> bytes:
    """A file of ``ids`` in ``fmt`` (column ``id``)."""
    if fmt is SyncFormat.CSV:
        return ("id\n" + "".join(f"{i}\n" for i in ids)).encode()
    if fmt is SyncFormat.NDJSON:
        return "".join(json.dumps({"id": i}) + "\n" for i in ids).encode()
    target = folder / "ids.parquet"
    with duckdb.connect() as con:
        con.execute(
            f"COPY (SELECT unnest(?::VARCHAR[]) AS id) TO '{target}' (FORMAT parquet)", [ids]
        )
    return target.read_bytes()
