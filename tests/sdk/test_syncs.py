"""A running sync through the SDK: the audience's typed ``sync.progress`` and the job's
progress as ``client.jobs.wait(on_progress=…)`` reads it, while a real HTTP source on
127.0.0.1 trickles its file in."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from fastapi import FastAPI

from audiences.config import Settings
from audiences.schemas.jobs import Job
from audiences.schemas.syncs import SyncProgress, SyncStatus
from tests.api.test_syncs import FileServer, Served, run_syncs
from tests.factories import make_tenant, own_app
from tests.sdk.conftest import sdk_client


@pytest.fixture(scope="module")
def server() -> Iterator[FileServer]:
    """One loopback file server for the module."""
    running = FileServer()
    yield running
    running.close()


@pytest.fixture(scope="module")
def sync_app(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    """An app that may fetch from loopback (the test runs the jobs)."""
    with own_app(
        settings,
        tmp_path_factory.mktemp("sdk-sync"),
        egress_allow_private=True,
        sync_timeout_seconds=30.0,
        worker_threads=0,
    ) as application:
        yield application


def test_a_running_sync_reads_as_typed_progress(sync_app: FastAPI, server: FileServer) -> None:
    """``sync.progress`` is a :class:`SyncProgress` while the file comes in; waiting on the
    job sees its rows end at the file's rows, and the finished sync has no progress."""
    body = b"id\n" + b"".join(b"sdk-%06d\n" % n for n in range(60_000))
    held = threading.Event()
    server.files["/sdk.csv"] = Served(
        body=body,
        gate=held,
        trickle=((len(body) // 4, 0.0), (len(body) // 4 + 100_000, 1.2), (len(body) // 2, 1.2)),
    )
    with make_tenant(sync_app) as tenant, sdk_client(sync_app, tenant) as client:
        audience = client.audiences.create(
            key="sdk-ext",
            name="SDK external",
            kind="external",
            source={"type": "file", "url": server.url("/sdk.csv"), "format": "csv"},
        )
        worker = threading.Thread(target=run_syncs, args=(sync_app,))
        worker.start()
        try:
            deadline = time.monotonic() + 20
            while True:
                sync = client.audiences.get(audience.id).sync
                assert sync is not None
                if sync.progress is not None and (sync.progress.bytes_fetched or 0) > 0:
                    break
                assert time.monotonic() < deadline, sync
                time.sleep(0.05)
        finally:
            held.set()
        readings: list[Job] = []
        assert sync.job_id is not None
        done = client.jobs.wait(sync.job_id, on_progress=readings.append, timeout=30)
        worker.join()
        assert isinstance(sync.progress, SyncProgress) and sync.status is SyncStatus.SYNCING
        assert sync.progress.bytes_total == len(body) and sync.progress.rows_read == 0
        assert done.progress.processed == done.progress.total == 60_000
        assert done.counts["bytes_fetched"] == len(body)
        assert readings[-1] == done
        after = client.audiences.get(audience.id).sync
        assert after is not None and after.status is SyncStatus.SYNCED and after.progress is None
