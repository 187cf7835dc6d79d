"""The write intake (SQLite): JSON membership writes logged, answered 202, committed in groups.

Each test runs an app of its own on SQLite (the intake exists only there), real files and a
real database; crashes are simulated by writing the log's segments as a killed process leaves
them (``tests/jobs/test_member_write_crashes.py`` kills a real server)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from audiences.api.app import create_app
from audiences.config import Settings
from audiences.kit.ids import new_id
from audiences.services import intake as intake_module
from audiences.services import intake_log
from audiences.services.intake import Intake
from audiences.services.intake_log import Record, directory
from audiences.services.read_cache import ExpiringMap
from audiences.store.tables import JobRow, MemberWriteRow
from tests.api.test_member_writes import members_of, run_jobs, static_audience, write
from tests.factories import Tenant, flushed, make_tenant


@pytest.fixture
def own_app(tmp_path: Path) -> Iterator[FastAPI]:
    """An app of this test's own on SQLite, its intake closed at the end."""
    app = create_app(
        Settings(
            data_dir=tmp_path / "data",
            database_url=f"sqlite:///{tmp_path / 'audiences.db'}",
            rate_limit="100000/minute",
            worker_threads=0,
            scheduler_seconds=0,
        )
    )
    yield app
    if app.state.runtime.intake is not None:
        app.state.runtime.intake.close()
    app.state.runtime.profiles.close()
    app.state.engine.dispose()


@pytest.fixture
def own(own_app: FastAPI) -> Iterator[Tenant]:
    with make_tenant(own_app) as made:
        yield made


def intake(app: FastAPI) -> Intake:
    found = app.state.runtime.intake
    assert found is not None
    return found


def test_the_intake_answers_as_the_ordinary_path_and_the_job_is_there_at_once(
    own_app: FastAPI, own: Tenant
) -> None:
    audience = static_audience(own.write)
    first = write(own.write, audience["id"], "add", ["a"])  # the ordinary path: learns
    before = intake(own_app).accepted
    url = f"/v1/audiences/{audience['id']}/members"
    response = own.write.post(url, json={"action": "add", "ids": ["b", "c"]})
    assert intake(own_app).accepted == before + 1  # logged, not committed by the request
    assert response.status_code == 202
    second = response.json()
    assert response.headers["Location"] == f"/v1/jobs/{second['id']}"
    assert response.headers["content-type"] == "application/json"
    assert second.keys() == first.keys()
    same = ("kind", "handler", "subject_id", "state", "progress", "counts", "result", "errors")
    assert {key: second[key] for key in same} == {key: first[key] for key in same}
    assert (second["created_by"], second["max_attempts"]) == (
        first["created_by"],
        first["max_attempts"],
    )
    assert own.read.get(f"/v1/jobs/{second['id']}").json() == second  # no flush asked for
    run_jobs(own_app)
    assert members_of(own.read, audience["id"]) == {"a", "b", "c"}


def test_writes_in_a_row_keep_acceptance_order_and_the_last_action_wins(
    own_app: FastAPI, own: Tenant
) -> None:
    audience = static_audience(own.write)
    write(own.write, audience["id"], "add", ["keep"])
    actions = ["add", "remove", "add", "replace", "remove", "add", "add", "remove", "add"]
    jobs = [
        write(own.write, audience["id"], action, ["x", "keep"][: 1 + i % 2])
        for i, action in enumerate(actions)
    ]
    assert intake(own_app).accepted == len(actions)
    flushed(own_app)
    with own_app.state.session_factory() as session:
        seqs = [session.get_one(JobRow, job["id"]).payload["seq"] for job in jobs]
    assert seqs == list(range(2, 2 + len(actions)))
    run_jobs(own_app)
    expected = {"keep"}
    for i, action in enumerate(actions):
        ids = {"x", "keep"} if i % 2 else {"x"}
        expected = {"add": expected | ids, "remove": expected - ids, "replace": set(ids)}[action]
    assert members_of(own.read, audience["id"]) == expected


def test_listing_and_cancelling_see_writes_just_accepted(own_app: FastAPI, own: Tenant) -> None:
    audience = static_audience(own.write)
    write(own.write, audience["id"], "add", ["a"])
    accepted = write(own.write, audience["id"], "add", ["b"])
    listed = own.read.get("/v1/jobs", params={"subject_id": audience["id"]}).json()
    assert accepted["id"] in {item["id"] for item in listed["data"]}
    another = write(own.write, audience["id"], "add", ["c"])
    cancelled = own.write.post(f"/v1/jobs/{another['id']}/cancel")
    assert (cancelled.status_code, cancelled.json()["state"]) == (200, "cancelled")


def test_a_write_through_the_documented_route_is_numbered_after_the_logged_ones(
    own_app: FastAPI, own: Tenant
) -> None:
    audience = static_audience(own.write)
    write(own.write, audience["id"], "add", ["a"])
    logged = write(own.write, audience["id"], "add", ["b"])
    keyed = own.write.post(
        f"/v1/audiences/{audience['id']}/members",
        json={"action": "remove", "ids": ["b"]},
        headers={"Idempotency-Key": "k1"},  # the documented route: waits for the intake
    )
    assert keyed.status_code == 202, keyed.text
    with own_app.state.session_factory() as session:
        seqs = [
            session.get_one(JobRow, j).payload["seq"] for j in (logged["id"], keyed.json()["id"])
        ]
    assert seqs == [2, 3]
    run_jobs(own_app)
    assert members_of(own.read, audience["id"]) == {"a"}


# -- the log, and recovery from it ------------------------------------------------------------


def _record(tenant: Tenant, audience_id: str, action: str, ids: list[str]) -> Record:
    import orjson

    return Record(
        job_id=new_id(),
        workspace_id=tenant.workspace_id,
        audience_id=audience_id,
        action=action,
        actor="api_key:test",
        created_at=datetime.now(UTC),
        max_attempts=3,
        body=orjson.dumps({"action": action, "ids": ids}),
    )


def _crash_leaves(app: FastAPI, records: list[Record], tail: bytes = b"", number: int = 90) -> Path:
    """The log as a process killed before committing ``records`` leaves it (in segment
    ``number``); the app's intake closed first (it is the process that died)."""
    intake(app).close()
    folder = directory(app.state.settings.data_dir)
    segment = folder / intake_log.segment_name(number)
    segment.write_bytes(b"".join(intake_log.encode(record) for record in records) + tail)
    return segment


def _reopen(app: FastAPI) -> Intake:
    opened = Intake.open(
        data_dir=app.state.settings.data_dir,
        session_factory=app.state.session_factory,
        targets=ExpiringMap(2.0),
    )
    assert opened is not None
    return opened


def _jobs(app: FastAPI, ids: list[str]) -> dict[str, JobRow]:
    with app.state.session_factory() as session:
        rows = list(session.scalars(select(JobRow).where(JobRow.id.in_(ids))))
        session.expunge_all()
    return {row.id: row for row in rows}


def test_recovery_creates_each_logged_job_once_in_order_and_again_is_a_no_op(
    own_app: FastAPI, own: Tenant
) -> None:
    audience = static_audience(own.write)
    write(own.write, audience["id"], "add", ["a"])
    records = [
        _record(own, audience["id"], "add", ["b", "c"]),
        _record(own, audience["id"], "remove", ["a"]),
        _record(own, audience["id"], "add", ["a"]),
    ]
    segment = _crash_leaves(own_app, records)
    _reopen(own_app).close()
    ids = [record.job_id for record in records]
    found = _jobs(own_app, ids)
    assert [found[job_id].payload["seq"] for job_id in ids] == [2, 3, 4]
    assert found[ids[0]].created_at == records[0].created_at
    assert segment.exists()  # the jobs read their bodies from it
    _reopen(own_app).close()  # killed again before the jobs ran: nothing new to replay
    with own_app.state.session_factory() as session:
        writes = session.scalars(
            select(MemberWriteRow.seq).where(MemberWriteRow.audience_id == audience["id"])
        ).all()
    assert sorted(writes) == [1, 2, 3, 4]
    run_jobs(own_app)
    assert members_of(own.read, audience["id"]) == {"a", "b", "c"}
    _reopen(own_app).close()
    assert not segment.exists()  # every job of it has ended


def test_a_segment_is_kept_until_every_job_it_holds_has_ended(
    own_app: FastAPI, own: Tenant
) -> None:
    audience = static_audience(own.write)
    write(own.write, audience["id"], "add", ["a"])
    records = [_record(own, audience["id"], "add", [f"k{i}"]) for i in range(2)]
    segment = _crash_leaves(own_app, records)
    for record in records:
        _reopen(own_app).close()  # closing drops what is done
        assert segment.exists()  # a job of it is still queued
        cancelled = own.write.post(f"/v1/jobs/{record.job_id}/cancel")
        assert cancelled.json()["state"] == "cancelled"
    _reopen(own_app).close()
    assert not segment.exists()


def test_each_check_looks_at_the_oldest_segments_first_and_at_a_bounded_number_of_jobs(
    own_app: FastAPI, own: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    audience = static_audience(own.write)
    write(own.write, audience["id"], "add", ["a"])
    records = [_record(own, audience["id"], "add", [f"k{i}"]) for i in range(2)]
    older = _crash_leaves(own_app, records[:1], number=90)
    newer = _crash_leaves(own_app, records[1:], number=91)
    _reopen(own_app).close()  # both replayed; their jobs queued
    for record in records:
        assert own.write.post(f"/v1/jobs/{record.job_id}/cancel").status_code == 200
    monkeypatch.setattr(intake_module, "LOOKUP_LIMIT", 1)
    _reopen(own_app).close()
    assert (older.exists(), newer.exists()) == (False, True)
    _reopen(own_app).close()
    assert not newer.exists()


def test_a_logged_body_is_read_only_for_its_own_job(own_app: FastAPI, own: Tenant) -> None:
    audience = static_audience(own.write)
    write(own.write, audience["id"], "add", ["a"])
    record = _record(own, audience["id"], "add", ["b"])
    _crash_leaves(own_app, [record])
    _reopen(own_app).close()
    location = _jobs(own_app, [record.job_id])[record.job_id].payload["body_log"]
    logged = intake_log.BodyLocation.from_payload(location)
    assert logged is not None
    data_dir = own_app.state.settings.data_dir
    assert intake_log.read_body(data_dir, logged, record.job_id) == record.body
    assert intake_log.read_body(data_dir, logged, new_id()) is None


class _FailingDisk:
    """The ``os`` the intake module sees, on a disk whose writes and truncations fail."""

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    @staticmethod
    def write(fd: int, data: bytes) -> int:
        raise OSError(5, "Input/output error")

    @staticmethod
    def ftruncate(fd: int, size: int) -> None:
        raise OSError(5, "Input/output error")


def test_a_log_that_cannot_be_repaired_stops_the_intake_and_writes_go_on(
    own_app: FastAPI, own: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    audience = static_audience(own.write)
    write(own.write, audience["id"], "add", ["a"])
    assert intake(own_app).takes(own.workspace_id, audience["id"])
    with monkeypatch.context() as patched:
        patched.setattr(intake_module, "os", _FailingDisk())
        write(own.write, audience["id"], "add", ["b"])  # answered by the ordinary path
    assert not intake(own_app).takes(own.workspace_id, audience["id"])
    write(own.write, audience["id"], "add", ["c"])
    run_jobs(own_app)
    assert members_of(own.read, audience["id"]) == {"a", "b", "c"}


def test_a_logged_body_damaged_on_disk_fails_its_job_and_applies_nothing(
    own_app: FastAPI, own: Tenant
) -> None:
    audience = static_audience(own.write)
    write(own.write, audience["id"], "add", ["a"])
    record = _record(own, audience["id"], "add", ["damaged"])
    segment = _crash_leaves(own_app, [record])
    _reopen(own_app).close()
    data = bytearray(segment.read_bytes())
    data[-3] ^= 0xFF  # inside the body: its checksum no longer matches
    segment.write_bytes(bytes(data))
    run_jobs(own_app)
    failed = _jobs(own_app, [record.job_id])[record.job_id]
    assert (failed.state, "gone" in (failed.last_error or "")) == ("failed", True)
    assert members_of(own.read, audience["id"]) == {"a"}


def test_a_torn_tail_is_dropped(own_app: FastAPI, own: Tenant) -> None:
    audience = static_audience(own.write)
    write(own.write, audience["id"], "add", ["a"])
    whole = [_record(own, audience["id"], "add", [f"w{i}"]) for i in range(2)]
    torn = intake_log.encode(_record(own, audience["id"], "add", ["torn"]))
    _crash_leaves(own_app, whole, tail=torn[: len(torn) - 3])
    _reopen(own_app).close()
    assert set(_jobs(own_app, [record.job_id for record in whole])) == {r.job_id for r in whole}
    run_jobs(own_app)
    assert members_of(own.read, audience["id"]) == {"a", "w0", "w1"}


def test_a_write_to_an_audience_deleted_before_its_commit_makes_a_failed_job(
    own_app: FastAPI, own: Tenant
) -> None:
    audience = static_audience(own.write)
    write(own.write, audience["id"], "add", ["a"])
    dynamic = own.write.post(
        "/v1/audiences", json={"key": "dyn", "name": "dyn", "kind": "dynamic", "rule": "age > 1"}
    ).json()
    assert own.write.delete(f"/v1/audiences/{audience['id']}").status_code == 204
    gone = _record(own, audience["id"], "add", ["b"])
    computed = _record(own, dynamic["id"], "add", ["b"])
    _crash_leaves(own_app, [gone, computed])
    _reopen(own_app).close()
    found = _jobs(own_app, [gone.job_id, computed.job_id])
    for record, code in ((gone, "audience_not_found"), (computed, "audience_not_static")):
        row = found[record.job_id]
        assert (row.state, row.errors[0]["code"]) == ("failed", code)
        assert row.result["indexing_state"] == "cancelled"
        body = static_members_body(own_app, own, record.job_id)
        assert not body.exists()


def static_members_body(app: FastAPI, tenant: Tenant, job_id: str) -> Path:
    from audiences.services import static_members

    return static_members.body_file(
        app.state.settings.data_dir, tenant.workspace_id, f"{job_id}.json"
    )


def test_a_second_process_on_the_same_data_dir_does_not_get_the_intake(
    own_app: FastAPI,
) -> None:
    second = Intake.open(
        data_dir=own_app.state.settings.data_dir,
        session_factory=own_app.state.session_factory,
        targets=ExpiringMap(2.0),
    )
    assert second is None


# -- framing ----------------------------------------------------------------------------------

records = st.builds(
    Record,
    job_id=st.text(min_size=1, max_size=30),
    workspace_id=st.text(max_size=30),
    audience_id=st.text(max_size=30),
    action=st.sampled_from(["add", "remove", "replace"]),
    actor=st.text(max_size=30),
    created_at=st.datetimes(timezones=st.just(UTC)),
    max_attempts=st.integers(1, 100),
    body=st.binary(max_size=2000),
)


@given(st.lists(records, max_size=5), st.data())
@settings(max_examples=150, deadline=None)
def test_framing_round_trips_and_any_cut_leaves_the_complete_records(
    logged: list[Record], data: Any
) -> None:
    framed = [intake_log.encode(record) for record in logged]
    whole = b"".join(framed)
    assert intake_log.decode(whole) == (logged, len(whole))
    cut = data.draw(st.integers(0, len(whole)))
    kept, covered = intake_log.decode(whole[:cut])
    ends = [sum(len(f) for f in framed[: i + 1]) for i in range(len(framed))]
    complete = sum(1 for end in ends if end <= cut)
    assert kept == logged[:complete]
    assert covered == (ends[complete - 1] if complete else 0)
    if whole:
        flipped = bytearray(whole)
        at = data.draw(st.integers(0, len(whole) - 1))
        flipped[at] ^= 0xFF
        damaged, _ = intake_log.decode(bytes(flipped))
        first_damaged = next(i for i, end in enumerate(ends) if at < end)
        assert damaged == logged[:first_damaged]
