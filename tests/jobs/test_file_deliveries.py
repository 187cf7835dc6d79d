"""File destinations on a real S3-compatible server (moto's, on 127.0.0.1), through the API
and the delivery jobs: full and changes modes land the right objects in every format; a
missing bucket or refused credentials show on the destination and its delivery log with
their codes, are retried on the schedule, and leave no object behind."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from audiences.config import Settings
from audiences.jobs.context import Cancelled
from audiences.kit.clock import utcnow
from audiences.services import deliveries, file_deliveries, senders
from audiences.store.tables import DestinationMessageRow, DestinationRow
from tests.factories import Tenant, make_tenant, own_app
from tests.jobs.test_deliveries import run_files, static, write
from tests.s3_server import KEY_ID, REGION, SECRET, S3Server, serving


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    """One S3-compatible server for the module."""
    with serving() as server:
        yield server


@pytest.fixture(scope="module")
def s3_app(
    settings: Settings, s3: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FastAPI]:
    """An app whose file destinations may write to any bucket of the test server, with a
    retry schedule short enough to wait out."""
    with own_app(
        settings,
        tmp_path_factory.mktemp("s3"),
        webhook_retry_schedule="0,0.2,0.2,0.2",
        webhook_batch_wait_seconds=0.0,
        destination_s3_buckets="*",
        destination_s3_endpoint_url=s3.endpoint,
        destination_s3_region=REGION,
        destination_s3_access_key_id=KEY_ID,
        destination_s3_secret_access_key=SecretStr(SECRET),
        destination_s3_timeout_seconds=5.0,
    ) as application:
        yield application


@pytest.fixture
def tenant_s3(s3_app: FastAPI) -> Iterator[Tenant]:
    """A fresh workspace on :func:`s3_app`."""
    with make_tenant(s3_app) as made:
        yield made


def destination(client: Any, name: str, path: str, **fields: Any) -> dict[str, Any]:
    """A file destination through the API."""
    answer = client.post(
        "/v1/destinations", json={"name": name, "kind": "file", "path": path, **fields}
    )
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def test_full_and_changes_modes_land_the_right_objects(
    s3_app: FastAPI, tenant_s3: Tenant, s3: S3Server
) -> None:
    """A ``full`` destination mirrors each audience (every member, each run); a ``changes``
    one writes the first list then who entered and exited; CSV, NDJSON and Parquet alike."""
    admin = tenant_s3.admin
    audience = static(admin)
    write(s3_app, admin, audience["id"], "add", ["a", "b"])
    bucket = s3.make_bucket(f"modes-{tenant_s3.slug}")
    follows = {"subscription": {"audience_ids": [audience["id"]]}}
    made = {
        (mode, fmt): destination(
            admin,
            f"{mode}-{fmt}",
            f"s3://{bucket}/{mode}/{fmt}",
            mode=mode,
            format=fmt,
            **follows,
        )
        for mode in ("full", "changes")
        for fmt in ("csv", "ndjson", "parquet")
    }
    run_files(s3_app)
    write(s3_app, admin, audience["id"], "remove", ["a"])
    write(s3_app, admin, audience["id"], "add", ["c"])
    for made_one in made.values():
        assert admin.post(f"/v1/destinations/{made_one['id']}/reset").status_code == 200
    run_files(s3_app)  # reset: the full ones write the list again, the changes ones too
    key = audience["key"]
    for fmt in ("csv", "ndjson", "parquet"):
        full = s3.keys(bucket, f"full/{fmt}/")
        assert len(full) == 2 and all(k.startswith(f"full/{fmt}/{key}-") for k in full), full
        assert [sorted(r["id"] for r in s3.rows(bucket, k)) for k in full] == [
            ["a", "b"],
            ["b", "c"],
        ]
        changes = s3.keys(bucket, f"changes/{fmt}/")
        first = s3.rows(bucket, changes[0])
        assert sorted((r["id"], r["change"]) for r in first) == [
            ("a", "entered"),
            ("b", "entered"),
        ]
        assert {r["cause"] for r in first} == {"full"}
    log = admin.get(f"/v1/destinations/{made[('full', 'csv')]['id']}/deliveries").json()
    assert [d["status"] for d in log["data"]] == ["delivered", "delivered"]
    files = admin.get(
        f"/v1/destinations/{made[('full', 'csv')]['id']}/deliveries/{log['data'][0]['id']}"
    ).json()["payload"]["data"]["files"]
    assert files == [{"audience": key, "file": s3.keys(bucket, "full/csv/")[-1], "rows": 2}]


def test_changes_between_runs_arrive_as_entered_and_exited(
    s3_app: FastAPI, tenant_s3: Tenant, s3: S3Server
) -> None:
    """After the first list, a ``changes`` destination writes only who moved, with the cause."""
    admin = tenant_s3.admin
    audience = static(admin)
    write(s3_app, admin, audience["id"], "add", ["a", "b"])
    bucket = s3.make_bucket(f"changes-{tenant_s3.slug}")
    made = destination(
        admin,
        "changes",
        f"s3://{bucket}/c",
        mode="changes",
        format="ndjson",
        subscription={"audience_ids": [audience["id"]]},
    )
    run_files(s3_app)
    write(s3_app, admin, audience["id"], "remove", ["a"])
    write(s3_app, admin, audience["id"], "add", ["c"])
    assert admin.post(f"/v1/destinations/{made['id']}/test").json()["delivered"] is True
    _due_now(s3_app, made["id"])
    run_files(s3_app)
    keys = [k for k in s3.keys(bucket, "c/") if not k.startswith("c/test-")]
    later = [(r["id"], r["change"], r["cause"]) for k in keys[1:] for r in s3.rows(bucket, k)]
    assert later == [("a", "exited", "write"), ("c", "entered", "write")]
    assert [k for k in s3.keys(bucket, "c/") if k.startswith("c/test-")]


def test_a_missing_bucket_shows_on_the_destination_and_is_retried(
    s3_app: FastAPI, tenant_s3: Tenant, s3: S3Server
) -> None:
    """Creating a destination on a bucket that does not exist yet is accepted; each write
    fails with ``s3_bucket_not_found`` in the delivery log and ``last_error`` (never a 500),
    is retried on the schedule, and lands once the bucket exists."""
    admin = tenant_s3.admin
    audience = static(admin)
    write(s3_app, admin, audience["id"], "add", ["a"])
    bucket = f"later-{tenant_s3.slug}"
    made = destination(
        admin, "later", f"s3://{bucket}/x", subscription={"audience_ids": [audience["id"]]}
    )
    run_files(s3_app)
    shown = admin.get(f"/v1/destinations/{made['id']}").json()
    assert shown["last_error"].startswith("s3_bucket_not_found: ")
    assert shown["enabled"] is True and shown["backlog"] == 1
    log = admin.get(f"/v1/destinations/{made['id']}/deliveries").json()["data"]
    assert [(d["status"], d["attempts"]) for d in log] == [("pending", 1)]
    assert log[0]["last_error"].startswith("s3_bucket_not_found: ")
    tested = admin.post(f"/v1/destinations/{made['id']}/test")
    assert tested.status_code == 200 and tested.json()["delivered"] is False
    assert tested.json()["delivery"]["last_error"].startswith("s3_bucket_not_found: ")
    s3.make_bucket(bucket)
    _run_until(s3_app, lambda: bool(s3.keys(bucket)))
    shown = admin.get(f"/v1/destinations/{made['id']}").json()
    assert shown["last_error"] is None and shown["backlog"] == 0
    log = admin.get(f"/v1/destinations/{made['id']}/deliveries").json()["data"]
    full = [d for d in log if d["type"] == "file.full"]
    assert [(d["status"], d["attempts"]) for d in full] == [("delivered", 2)]
    keys = s3.keys(bucket)
    assert len(keys) == 1 and keys[0].startswith(f"x/{audience['key']}-"), keys
    assert keys[0].endswith("-full.csv")
    assert [r["id"] for r in s3.rows(bucket, keys[0])] == ["a"]


def test_refused_credentials_disable_the_destination_past_the_schedule(
    s3_app: FastAPI, tenant_s3: Tenant, s3: S3Server
) -> None:
    """Credentials the service refuses fail every attempt with ``s3_access_denied``; past the
    schedule the destination is turned off saying why, and nothing was written."""
    admin = tenant_s3.admin
    audience = static(admin)
    write(s3_app, admin, audience["id"], "add", ["a"])
    bucket = s3.make_bucket(f"denied-{tenant_s3.slug}")
    made = destination(
        admin,
        "denied",
        f"s3://{bucket}/x",
        mode="changes",
        subscription={"audience_ids": [audience["id"]]},
    )
    with s3.checking_credentials():
        _run_until(
            s3_app,
            lambda: not admin.get(f"/v1/destinations/{made['id']}").json()["enabled"],
        )
    shown = admin.get(f"/v1/destinations/{made['id']}").json()
    assert "s3_access_denied: " in shown["disabled_reason"]
    log = admin.get(f"/v1/destinations/{made['id']}/deliveries").json()["data"]
    assert [(d["status"], d["attempts"]) for d in log] == [("pending", 4)]
    assert s3.keys(bucket) == []


def _due_now(app: FastAPI, destination_id: str) -> None:
    """Make a file destination's next write due (its interval is at least a minute)."""
    with app.state.session_factory.begin() as session:
        row = session.get_one(DestinationRow, destination_id)
        deliveries.schedule_next(session, row, utcnow().replace(year=2000))


def _run_until(app: FastAPI, done: Any, seconds: float = 15.0) -> None:
    """Run due file deliveries as the scheduler and a worker would, until ``done()``."""
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "the files did not land in time"
        run_files(app)
        time.sleep(0.1)


class Hanging:
    """An endpoint on 127.0.0.1 that accepts connections and answers nothing until
    ``release`` is set; then it closes each one at once."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.connected = threading.Event()
        self.release = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connected.set()
            self.release.wait(30)
            conn.close()

    def close(self) -> None:
        self.release.set()
        self.listener.close()


def test_a_bucket_that_hangs_never_holds_up_other_writes(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A ``full`` run is written outside any transaction: while its upload waits on an
    endpoint that answers nothing, the workspace's writes go through; then the write fails
    with ``s3_unreachable`` in the log and waits for its retry."""
    hanging = Hanging()
    try:
        with (
            own_app(
                settings,
                tmp_path_factory.mktemp("hang"),
                destination_s3_buckets="*",
                destination_s3_endpoint_url=hanging.url,
                destination_s3_access_key_id=KEY_ID,
                destination_s3_secret_access_key=SecretStr(SECRET),
                destination_s3_timeout_seconds=60.0,
            ) as application,
            make_tenant(application) as tenant,
        ):
            audience = static(tenant.admin)
            write(application, tenant.admin, audience["id"], "add", ["a"])
            made = destination(
                tenant.admin, "hangs", "s3://slow/x",
                subscription={"audience_ids": [audience["id"]]},
            )  # fmt: skip
            delivering = threading.Thread(target=run_files, args=(application,))
            delivering.start()
            assert hanging.connected.wait(30)
            other = tenant.admin.post(
                "/v1/audiences", json={"key": "meanwhile", "name": "Meanwhile", "kind": "static"}
            )
            still_waiting = delivering.is_alive()
            hanging.release.set()
            delivering.join(60)
            assert other.status_code == 201, other.text
            assert still_waiting  # the write went through while the upload waited
            shown = tenant.admin.get(f"/v1/destinations/{made['id']}").json()
            assert shown["last_error"].startswith("s3_unreachable: ")
            log = tenant.admin.get(f"/v1/destinations/{made['id']}/deliveries").json()["data"]
            assert [(d["type"], d["status"], d["attempts"]) for d in log] == [
                ("file.full", "pending", 1)
            ]
    finally:
        hanging.close()


def test_an_endpoint_boto3_refuses_fails_each_write_on_the_schedule(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Settings boto3 cannot build a client from (made before the settings check) never give
    a 500 nor a crashed job: ``/test`` answers ``s3_misconfigured``, and a ``full`` run is a
    failed attempt whose retry is scheduled."""
    with (
        own_app(
            settings,
            tmp_path_factory.mktemp("misconfigured"),
            destination_s3_buckets="*",
            destination_s3_endpoint_url="http://minio_1:9000",
            destination_s3_access_key_id=KEY_ID,
            destination_s3_secret_access_key=SecretStr(SECRET),
        ) as application,
        make_tenant(application) as tenant,
    ):
        audience = static(tenant.admin)
        write(application, tenant.admin, audience["id"], "add", ["a"])
        made = destination(
            tenant.admin, "bad-endpoint", "s3://bkt/x",
            subscription={"audience_ids": [audience["id"]]},
        )  # fmt: skip
        tested = tenant.admin.post(f"/v1/destinations/{made['id']}/test")
        assert tested.status_code == 200, tested.text
        assert tested.json()["delivered"] is False
        assert tested.json()["delivery"]["last_error"].startswith("s3_misconfigured: ")
        before = utcnow()
        run_files(application)
        shown = tenant.admin.get(f"/v1/destinations/{made['id']}").json()
        assert shown["last_error"].startswith("s3_misconfigured: ")
        assert shown["enabled"] is True
        assert datetime.fromisoformat(shown["next_run_at"]) > before  # not due every tick
        log = tenant.admin.get(f"/v1/destinations/{made['id']}/deliveries").json()["data"]
        assert [(d["type"], d["status"], d["attempts"]) for d in log] == [
            ("file.full", "pending", 1),
            ("destination.test", "failed", 1),
        ]


def test_a_snapshot_is_never_rewritten_with_later_members(
    s3_app: FastAPI, tenant_s3: Tenant, s3: S3Server
) -> None:
    """A ``full`` run's ``file.full`` message is not redelivered (409, left out of
    ``redeliver`` since), and an older one left pending is not reused: each run writes a new
    snapshot and the old objects keep the members they had."""
    admin = tenant_s3.admin
    audience = static(admin)
    write(s3_app, admin, audience["id"], "add", ["a"])
    bucket = s3.make_bucket(f"snapshots-{tenant_s3.slug}")
    made = destination(
        admin, "snapshots", f"s3://{bucket}/x", subscription={"audience_ids": [audience["id"]]}
    )
    run_files(s3_app)
    [first] = s3.keys(bucket)
    [logged] = admin.get(f"/v1/destinations/{made['id']}/deliveries").json()["data"]
    write(s3_app, admin, audience["id"], "add", ["b"])
    again = admin.post(f"/v1/destinations/{made['id']}/deliveries/{logged['id']}/redeliver")
    assert again.status_code == 409 and again.json()["code"] == "delivery_is_snapshot"
    since = admin.post(
        f"/v1/destinations/{made['id']}/redeliver",
        json={"since": utcnow().replace(year=2000).isoformat()},
    )
    assert since.status_code == 202 and since.json()["redelivered"] == 0, since.text
    _due_now(s3_app, made["id"])
    run_files(s3_app)
    with s3_app.state.session_factory.begin() as session:  # as a redelivery before the fix left it
        message = session.get_one(DestinationMessageRow, logged["id"])
        message.status, message.delivered_at = "pending", None
    write(s3_app, admin, audience["id"], "add", ["c"])
    _due_now(s3_app, made["id"])
    run_files(s3_app)
    keys = s3.keys(bucket)
    assert len(keys) == 3 and keys[0] == first, keys
    assert [sorted(r["id"] for r in s3.rows(bucket, key)) for key in keys] == [
        ["a"],
        ["a", "b"],
        ["a", "b", "c"],
    ]


def test_a_run_that_crashed_after_planning_is_written_again_under_the_same_names(
    s3_app: FastAPI, tenant_s3: Tenant, s3: S3Server
) -> None:
    """A crash between planning a ``full`` run and logging it (its files written or not)
    leaves its message pending: the next run reuses it, rewriting the same object names, and
    logs one delivered message."""
    admin = tenant_s3.admin
    audience = static(admin)
    write(s3_app, admin, audience["id"], "add", ["a", "b"])
    bucket = s3.make_bucket(f"crashed-{tenant_s3.slug}")
    made = destination(
        admin, "crashed", f"s3://{bucket}/x", subscription={"audience_ids": [audience["id"]]}
    )
    runtime = s3_app.state.runtime
    with s3_app.state.session_factory.begin() as session:
        row = session.get_one(DestinationRow, made["id"])
        mirror = file_deliveries.plan(session, runtime=runtime, row=row, now=utcnow())
    file_deliveries.write_full(runtime, mirror, s3_app.state.settings)  # then the crash
    name = f"x/{audience['key']}-{senders.file_stamp(mirror.created_at)}-{mirror.seq:08d}-full.csv"
    assert s3.keys(bucket) == [name]
    run_files(s3_app)
    assert s3.keys(bucket) == [name]
    log = admin.get(f"/v1/destinations/{made['id']}/deliveries").json()["data"]
    assert [(d["id"], d["status"], d["attempts"]) for d in log] == [
        (mirror.message_id, "delivered", 1)
    ]


def test_a_full_run_checkpoints_between_its_files(
    s3_app: FastAPI, tenant_s3: Tenant, s3: S3Server
) -> None:
    """``between`` (the job's checkpoint and lease renewal) runs between files; what it raises
    (a cancel) ends the run with the files so far whole and its message left pending."""
    admin = tenant_s3.admin
    first, second, third = static(admin), static(admin), static(admin)
    for audience in (first, second, third):
        write(s3_app, admin, audience["id"], "add", ["a"])
    bucket = s3.make_bucket(f"between-{tenant_s3.slug}")
    followed = [first["id"], second["id"], third["id"]]
    made = destination(
        admin, "between", f"s3://{bucket}/x", subscription={"audience_ids": followed}
    )
    runtime = s3_app.state.runtime
    with s3_app.state.session_factory.begin() as session:
        row = session.get_one(DestinationRow, made["id"])
        mirror = file_deliveries.plan(session, runtime=runtime, row=row, now=utcnow())
    seen: list[int] = []

    def between() -> None:
        seen.append(len(s3.keys(bucket)))
        if len(seen) == 2:
            raise Cancelled("job")

    with pytest.raises(Cancelled):
        file_deliveries.write_full(runtime, mirror, s3_app.state.settings, between=between)
    assert seen == [1, 2]
    assert len(s3.keys(bucket)) == 2
    log = admin.get(f"/v1/destinations/{made['id']}/deliveries").json()["data"]
    assert [(d["status"], d["attempts"]) for d in log] == [("pending", 0)]


def test_a_test_file_is_written_outside_the_requests_transaction(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """``POST …/test`` on a bucket that answers nothing holds no transaction open while it
    waits: the workspace's writes go through meanwhile, and the delivery log shows the message
    ``sending``; then it answers ``s3_unreachable``."""
    hanging = Hanging()
    try:
        with (
            own_app(
                settings,
                tmp_path_factory.mktemp("test-hang"),
                destination_s3_buckets="*",
                destination_s3_endpoint_url=hanging.url,
                destination_s3_access_key_id=KEY_ID,
                destination_s3_secret_access_key=SecretStr(SECRET),
                destination_s3_timeout_seconds=60.0,
            ) as application,
            make_tenant(application) as tenant,
        ):
            audience = static(tenant.admin)
            made = destination(
                tenant.admin, "hangs", "s3://slow/x", mode="changes",
                subscription={"audience_ids": [audience["id"]]},
            )  # fmt: skip
            answers: list[Any] = []
            testing = threading.Thread(
                target=lambda: answers.append(
                    tenant.admin.post(f"/v1/destinations/{made['id']}/test")
                )
            )
            testing.start()
            assert hanging.connected.wait(30)
            other = tenant.admin.post(
                "/v1/audiences", json={"key": "meanwhile", "name": "Meanwhile", "kind": "static"}
            )
            in_flight = tenant.admin.get(f"/v1/destinations/{made['id']}/deliveries")
            still_waiting = testing.is_alive()
            hanging.release.set()
            testing.join(60)
            assert other.status_code == 201, other.text
            assert still_waiting  # the write went through while the upload waited
            assert in_flight.status_code == 200, in_flight.text  # the log shows it meanwhile
            assert [d["status"] for d in in_flight.json()["data"]] == ["sending"]
            [tested] = answers
            assert tested.status_code == 200 and tested.json()["delivered"] is False
            assert tested.json()["delivery"]["last_error"].startswith("s3_unreachable: ")
            log = tenant.admin.get(f"/v1/destinations/{made['id']}/deliveries").json()["data"]
            assert [(d["type"], d["status"]) for d in log] == [("destination.test", "failed")]
    finally:
        hanging.close()
