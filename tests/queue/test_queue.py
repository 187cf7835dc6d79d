"""Queue semantics on the real database: enqueue, claim, leases, progress, retries, cancel, reap."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session, sessionmaker

from audiences import queue
from audiences.errors import Conflict
from audiences.kit.clock import utcnow
from audiences.queue import ClaimedJob, LeaseLost
from audiences.store.tables import JobRow
from tests.jobs.conftest import enqueue, load

LEASE = 30.0


def claim(
    factory: sessionmaker[Session], handler: str, owner: str = "w1", **options: Any
) -> ClaimedJob | None:
    with factory.begin() as session:
        return queue.claim(session, owner=owner, lease_seconds=LEASE, handlers={handler}, **options)


def claimed(factory: sessionmaker[Session], handler: str, owner: str = "w1") -> ClaimedJob:
    job = claim(factory, handler, owner)
    assert job is not None
    return job


def test_enqueue_with_a_dedupe_key_returns_the_first_job(
    factory: sessionmaker[Session], workspace_id: str, handler: str
) -> None:
    first = enqueue(factory, workspace_id, handler, dedupe_key="upload-42", payload={"n": 1})
    again = enqueue(factory, workspace_id, handler, dedupe_key="upload-42", payload={"n": 2})
    other = enqueue(factory, workspace_id, handler, dedupe_key="upload-43")
    plain = [enqueue(factory, workspace_id, handler) for _ in range(2)]
    assert again == first
    assert len({first, other, *plain}) == 4
    assert load(factory, first).payload == {"n": 1}


def test_concurrent_enqueues_of_one_dedupe_key_make_one_job(
    factory: sessionmaker[Session], workspace_id: str, handler: str
) -> None:
    ids: list[str] = []
    barrier = threading.Barrier(4)

    def one() -> None:
        barrier.wait()
        ids.append(enqueue(factory, workspace_id, handler, dedupe_key="same"))

    threads = [threading.Thread(target=one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(ids) == 4
    assert len(set(ids)) == 1


def test_enqueue_refuses_a_handler_name_that_is_not_domain_verb(
    factory: sessionmaker[Session], workspace_id: str
) -> None:
    with pytest.raises(ValueError, match=r"domain\.verb"):
        enqueue(factory, workspace_id, "Evaluate")
    with pytest.raises(ValueError):
        enqueue(factory, workspace_id, "tests.ok", kind="compute")


def test_claim_takes_due_jobs_oldest_first_and_counts_an_attempt(
    factory: sessionmaker[Session], workspace_id: str, handler: str
) -> None:
    later = enqueue(factory, workspace_id, handler, run_after=utcnow() + timedelta(hours=1))
    first = enqueue(factory, workspace_id, handler, subject_id="aud-1")
    second = enqueue(factory, workspace_id, handler)
    assert claim(factory, "tests.nobody_runs_this") is None
    one, two = claimed(factory, handler), claimed(factory, handler, owner="w2")
    assert (one.id, two.id) == (first, second)
    assert claim(factory, handler) is None
    assert (one.attempt, one.subject_id, one.owner) == (1, "aud-1", "w1")
    row = load(factory, first)
    assert (row.state, row.attempts, row.lease_owner) == ("running", 1, "w1")
    assert row.started_at is not None and row.lease_expires_at is not None
    future = claim(factory, handler, now=utcnow() + timedelta(hours=2))
    assert future is not None and future.id == later


def test_concurrent_claims_take_each_job_exactly_once(
    factory: sessionmaker[Session], workspace_id: str, handler: str
) -> None:
    ids = {enqueue(factory, workspace_id, handler) for _ in range(30)}
    taken: list[str] = []
    barrier = threading.Barrier(6)

    def drain(owner: str) -> None:
        barrier.wait()
        while (job := claim(factory, handler, owner)) is not None:
            taken.append(job.id)

    threads = [threading.Thread(target=drain, args=(f"w{n}",)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(taken) == sorted(ids)


def test_heartbeat_extends_the_lease_and_reports_a_cancel_request(
    factory: sessionmaker[Session], workspace_id: str, handler: str
) -> None:
    enqueue(factory, workspace_id, handler)
    job = claimed(factory, handler)
    before = load(factory, job.id).lease_expires_at
    with factory.begin() as session:
        assert queue.heartbeat(session, job=job, lease_seconds=LEASE * 2) is False
    after = load(factory, job.id).lease_expires_at
    assert before is not None and after is not None and after > before
    with factory.begin() as session:
        queue.cancel(session, job=session.get_one(JobRow, job.id))
    with factory.begin() as session:
        assert queue.heartbeat(session, job=job, lease_seconds=LEASE) is True
    assert load(factory, job.id).state == "running"


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=8))
def test_progress_never_goes_backwards(
    factory: sessionmaker[Session], workspace_id: str, handler: str, steps: list[int]
) -> None:
    job_id = enqueue(factory, workspace_id, handler)
    job = claimed(factory, handler)
    assert job.id == job_id
    seen = []
    for step in steps:
        with factory.begin() as session:
            queue.checkpoint(session, job=job, lease_seconds=LEASE, processed=step, total=1000)
        seen.append(load(factory, job.id).processed)
    assert seen == [max(steps[: n + 1]) for n in range(len(steps))]
    with factory.begin() as session:
        queue.complete(session, job=job)


def test_checkpoint_saves_counts_and_keeps_the_first_errors(
    factory: sessionmaker[Session], workspace_id: str, handler: str
) -> None:
    enqueue(factory, workspace_id, handler)
    job = claimed(factory, handler)
    errors = [{"code": "bad_row", "message": f"row {n}", "row": n} for n in range(600)]
    for half in (errors[:300], errors[300:]):
        with factory.begin() as session:
            queue.checkpoint(
                session, job=job, lease_seconds=LEASE, counts={"rows": 600}, errors=half
            )
    with factory.begin() as session:
        queue.complete(session, job=job, result={"ok": True}, errors=errors)
    row = load(factory, job.id)
    assert row.counts == {"rows": 600}
    assert row.error_count == 1200
    assert len(row.errors) == queue.MAX_ERRORS
    assert row.errors[0] == errors[0]
    assert row.errors[-1] == errors[399]
    assert (row.state, row.result, row.lease_owner) == ("succeeded", {"ok": True}, None)
    assert row.finished_at is not None


def test_failures_retry_with_doubling_backoff_until_attempts_run_out(
    factory: sessionmaker[Session], workspace_id: str, handler: str
) -> None:
    job_id = enqueue(factory, workspace_id, handler, max_attempts=3)
    now = utcnow()
    waits = []
    for attempt in (1, 2):
        job = claim(factory, handler, now=now)
        assert job is not None and job.attempt == attempt
        with factory.begin() as session:
            state = queue.fail(session, job=job, error="boom", backoff_seconds=10, now=now)
        assert state == "queued"
        row = load(factory, job_id)
        waits.append(row.run_after - now)
        assert claim(factory, handler, now=row.run_after - timedelta(seconds=1)) is None
        now = row.run_after
    assert waits == [timedelta(seconds=10), timedelta(seconds=20)]
    job = claim(factory, handler, now=now)
    assert job is not None and job.attempt == 3
    with factory.begin() as session:
        assert queue.fail(session, job=job, error="still boom", backoff_seconds=10) == "failed"
    row = load(factory, job_id)
    assert (row.state, row.attempts, row.last_error) == ("failed", 3, "still boom")
    assert [error["attempt"] for error in row.errors] == [1, 2, 3]
    assert {error["code"] for error in row.errors} == {"attempt_failed"}


def test_a_failure_that_no_retry_can_fix_fails_at_once(
    factory: sessionmaker[Session], workspace_id: str, handler: str
) -> None:
    enqueue(factory, workspace_id, handler, max_attempts=5)
    job = claimed(factory, handler)
    with factory.begin() as session:
        state = queue.fail(session, job=job, error="bad payload", backoff_seconds=0, retry=False)
    assert state == "failed"
    assert load(factory, job.id).attempts == 1


def test_cancel_stops_a_queued_job_at_once_and_asks_a_running_one(
    factory: sessionmaker[Session], workspace_id: str, handler: str
) -> None:
    waiting = enqueue(factory, workspace_id, handler, run_after=utcnow() + timedelta(hours=1))
    enqueue(factory, workspace_id, handler)
    running = claimed(factory, handler)
    with factory.begin() as session:
        stopped = queue.cancel(session, job=session.get_one(JobRow, waiting))
        asked = queue.cancel(session, job=session.get_one(JobRow, running.id))
        assert (stopped.state, stopped.finished_at is not None) == ("cancelled", True)
        assert (asked.state, asked.cancel_requested) == ("running", True)
    with factory.begin() as session:
        queue.fail(session, job=running, error="stopped", backoff_seconds=0)
    assert load(factory, running.id).state == "cancelled"
    with factory.begin() as session, pytest.raises(Conflict) as raised:
        queue.cancel(session, job=session.get_one(JobRow, waiting))
    assert raised.value.code == "job_finished"


def test_reap_requeues_expired_leases_and_the_old_worker_cannot_write(
    factory: sessionmaker[Session], workspace_id: str, handler: str
) -> None:
    job_id = enqueue(factory, workspace_id, handler, max_attempts=2)
    lost = claimed(factory, handler)
    with factory.begin() as session:
        assert job_id not in queue.reap(session)
        later = utcnow() + timedelta(seconds=LEASE + 1)
        assert job_id in queue.reap(session, now=later)
    row = load(factory, job_id)
    assert (row.state, row.attempts, row.lease_owner) == ("queued", 1, None)
    assert row.errors[0]["code"] == "lease_expired"
    for call in (queue.heartbeat, queue.checkpoint):
        with factory.begin() as session, pytest.raises(LeaseLost):
            call(session, job=lost, lease_seconds=LEASE)
    retry = claim(factory, handler, "w2", now=later)
    assert retry is not None and retry.attempt == 2
    with factory.begin() as session, pytest.raises(LeaseLost):
        queue.complete(session, job=lost, result="stale")
    with factory.begin() as session:
        assert job_id in queue.reap(session, now=later + timedelta(seconds=LEASE + 1))
    row = load(factory, job_id)
    assert (row.state, row.attempts) == ("failed", 2)
    assert "expired" in (row.last_error or "")


def test_reap_ends_a_job_whose_cancel_was_requested(
    factory: sessionmaker[Session], workspace_id: str, handler: str
) -> None:
    enqueue(factory, workspace_id, handler)
    job = claimed(factory, handler)
    with factory.begin() as session:
        queue.cancel(session, job=session.get_one(JobRow, job.id))
    with factory.begin() as session:
        queue.reap(session, now=utcnow() + timedelta(seconds=LEASE + 1))
    assert load(factory, job.id).state == "cancelled"


def test_release_requeues_without_counting_the_attempt(
    factory: sessionmaker[Session], workspace_id: str, handler: str
) -> None:
    enqueue(factory, workspace_id, handler)
    job = claimed(factory, handler)
    with factory.begin() as session:
        queue.release(session, job=job)
    row = load(factory, job.id)
    assert (row.state, row.attempts, row.lease_owner) == ("queued", 0, None)


def test_active_for_subject_lists_queued_and_running_jobs_only(
    factory: sessionmaker[Session], workspace_id: str, handler: str
) -> None:
    done = enqueue(factory, workspace_id, handler, subject_id="aud-7")
    job = claimed(factory, handler)
    assert job.id == done
    with factory.begin() as session:
        queue.complete(session, job=job)
    waiting = enqueue(factory, workspace_id, handler, subject_id="aud-7")
    enqueue(factory, workspace_id, handler, subject_id="aud-8")
    with factory() as session:
        active = queue.active_for_subject(session, workspace_id=workspace_id, subject_id="aud-7")
    assert [row.id for row in active] == [waiting]


def test_jobs_taken_for_another_jobs_work_are_leased_finished_or_released(
    factory: sessionmaker[Session], workspace_id: str, handler: str
) -> None:
    """A worker that does queued jobs' work with its own (folded member writes) leases them
    first: a job another worker holds is never taken, a released one goes back uncounted."""
    first, second, third = (enqueue(factory, workspace_id, handler) for _ in range(3))
    held_elsewhere = claimed(factory, handler, owner="other")
    assert held_elsewhere.id == first
    with factory.begin() as session:
        taken = queue.take_queued(
            session, job_ids=[first, second, third], owner="me", lease_seconds=30
        )
    assert sorted(taken) == sorted([second, third])
    assert {load(factory, job_id).state for job_id in taken} == {"running"}
    with factory.begin() as session:
        queue.release_taken(session, job_ids=[second], owner="me")
        queue.release_taken(session, job_ids=[first], owner="me")  # not mine: untouched
    assert (load(factory, second).state, load(factory, second).attempts) == ("queued", 0)
    assert load(factory, first).lease_owner == "other"
    with factory.begin() as session:
        assert queue.held_by(session, job_ids=[first, second, third], owner="me") == {third}
        done = queue.finish_taken(
            session,
            results={third: ({"ok": True}, {"ids": 5}, 5), first: ({"ok": False}, {}, 0)},
            owner="me",
        )
    assert done == [third]
    finished = load(factory, third)
    assert (finished.state, finished.result, finished.counts) == (
        "succeeded",
        {"ok": True},
        {"ids": 5},
    )
    assert (finished.processed, finished.total, finished.attempts) == (5, 5, 1)
    assert load(factory, first).state == "running"  # still the other worker's


def test_a_heartbeat_also_keeps_the_jobs_taken_for_its_work(
    factory: sessionmaker[Session], workspace_id: str, handler: str
) -> None:
    enqueue(factory, workspace_id, handler)
    other = enqueue(factory, workspace_id, handler)
    mine = claimed(factory, handler, owner="me")
    with factory.begin() as session:
        assert queue.take_queued(session, job_ids=[other], owner="me", lease_seconds=1) == [other]
    soon = load(factory, other).lease_expires_at
    with factory.begin() as session:
        queue.heartbeat(session, job=mine, lease_seconds=LEASE)
    renewed = load(factory, other).lease_expires_at
    assert soon is not None and renewed is not None and renewed > soon
