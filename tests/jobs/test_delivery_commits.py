"""A delivery run against the database's commits: a message is sent only once the transaction
that made it has committed, and a client's redelivery that lands while a message's success is
being logged is kept (the message goes out again, same ``webhook-id``)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from audiences.jobs.delivery_line import Line
from audiences.services import delivery_sends, messages, outbox
from audiences.store.tables import DestinationMessageRow, JobRow
from tests import factories
from tests.factories import Tenant
from tests.jobs.test_deliveries import deliver, static, webhook, write
from tests.webhook_receiver import Receiver, receiving


def _sent_ids(receiver: Receiver) -> list[str]:
    with receiver.lock:
        return [one.headers["webhook-id"] for one in receiver.requests]


def test_a_built_message_is_sent_only_after_its_transaction_commits(
    hooks_app: FastAPI, hooks: Tenant, monkeypatch: Any
) -> None:
    audience = static(hooks.admin)
    write(hooks_app, hooks.admin, audience["id"], "add", ["u1", "u2"])
    built: list[str] = []
    failed: list[str] = []
    original = messages.build

    def build(session: Session, **given: Any) -> list[messages.Made]:
        made = original(session, **given)
        built.extend(one.id for one in made)
        return made

    with receiving() as receiver:

        def fail_the_first_build_commit(session: Session) -> None:
            if failed or not built:
                return
            failed.append(built[0])
            deadline = time.monotonic() + 2.0  # time enough for a line sending too early
            while built[0] not in _sent_ids(receiver) and time.monotonic() < deadline:
                time.sleep(0.02)
            raise RuntimeError("the commit of the first build fails")

        made = webhook(hooks.admin, receiver.url, audience_ids=[audience["id"]])
        receiver.secrets.append(made["secret"])
        monkeypatch.setattr(messages, "build", build)
        factory = hooks_app.state.session_factory
        event.listen(factory, "before_commit", fail_the_first_build_commit)
        try:
            deliver(
                hooks_app, lambda: {"u1", "u2"} <= {c[2] for c in receiver.changes()}, seconds=40
            )
        finally:
            event.remove(factory, "before_commit", fail_the_first_build_commit)
    assert failed, "the first build's commit was made to fail"
    with factory() as session:
        stored = set(session.scalars(select(DestinationMessageRow.id)))
    sent = _sent_ids(receiver)
    assert failed[0] not in sent  # never sent: the database never held it
    assert set(sent) <= stored
    assert sorted(c[2] for c in receiver.changes()) == ["u1", "u2"]  # each change once


@pytest.mark.parametrize("first", [204, 503])
def test_a_redelivery_asked_while_an_attempt_is_logged_sends_the_message_again(
    hooks_app: FastAPI, hooks: Tenant, monkeypatch: Any, first: int
) -> None:
    """Its first answer a success (it would end delivered) or a failure asking for an hour's
    wait (it would wait an hour): either way the redelivery asked meanwhile goes out now."""

    def script(number: int, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
        return (first, {"Retry-After": "3600"}) if number == 0 else (204, {})

    audience = static(hooks.admin)
    write(hooks_app, hooks.admin, audience["id"], "add", ["u1", "u2"])
    original = Line.take
    asked: list[str] = []

    def redeliver_first(line: Line, **waiting: Any) -> list[delivery_sends.Sent]:
        """The run takes the first outcome; before the step that logs it (the step's
        transaction holds the write lock from its first statement), a client asks again."""
        sent = original(line, **waiting)
        if not asked and sent:
            one = sent[0].send
            asked.append(one.message_id)
            path = f"/v1/destinations/{one.destination_id}/deliveries/{one.message_id}/redeliver"
            answer = hooks.admin.post(path)
            assert answer.status_code == 202, answer.text
        return sent

    monkeypatch.setattr(Line, "take", redeliver_first)
    with receiving(script) as receiver:
        made = webhook(hooks.admin, receiver.url, audience_ids=[audience["id"]])
        receiver.secrets.append(made["secret"])
        deliver(hooks_app, lambda: bool(asked) and _sent_ids(receiver).count(asked[0]) == 2)
    with hooks_app.state.session_factory() as session:
        status = session.scalar(
            select(DestinationMessageRow.status).where(DestinationMessageRow.id == asked[0])
        )
    assert status == "delivered"
    assert len(receiver.requests) == len(set(_sent_ids(receiver))) + 1  # only it went twice


def test_a_redelivery_goes_before_the_backlog_being_sent(hooks_app: FastAPI, hooks: Tenant) -> None:
    audience = static(hooks.admin)
    ids = [f"u{n}" for n in range(400)]  # several messages of at most 50 changes
    write(hooks_app, hooks.admin, audience["id"], "add", ids)
    asked: list[str] = []
    seen: list[str] = []
    made: dict[str, str] = {}

    def slow(number: int, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
        seen.append(headers["webhook-id"])
        if number == 2:  # the first message was answered: a client asks for it again
            path = f"/v1/destinations/{made['id']}/deliveries/{seen[0]}/redeliver"
            answer = hooks.admin.post(path)
            assert answer.status_code == 202, answer.text
            asked.append(seen[0])
        time.sleep(0.2)
        return 204, {}

    with receiving(slow) as receiver:
        made.update(webhook(hooks.admin, receiver.url, audience_ids=[audience["id"]]))
        receiver.secrets.append(made["secret"])
        deliver(hooks_app, lambda: bool(asked) and _sent_ids(receiver).count(asked[0]) == 2)
        deliver(hooks_app, lambda: receiver.members(audience["key"]) == set(ids), seconds=30)
    sent = _sent_ids(receiver)
    again = len(sent) - 1 - sent[::-1].index(asked[0])
    assert again < len(sent) - 1  # not after the whole backlog: before the last message
    assert sent[again + 1 :] == [one for one in sent[again + 1 :] if one not in sent[:again]]


def test_a_destination_deleted_while_its_messages_are_sent_ends_the_run_cleanly(
    hooks_app: FastAPI, hooks: Tenant
) -> None:
    """Deleted between two answers: the run stops at its next step (what it had handed the
    line may still go out), logs nothing for the messages gone with it, and its job succeeds
    at its first attempt (no error, no retry). On PostgreSQL the delete waits for the step in
    progress, which holds the destination key-share locked."""
    audience = static(hooks.admin)
    write(hooks_app, hooks.admin, audience["id"], "add", [f"u{n}" for n in range(400)])
    made: dict[str, str] = {}
    deleted: list[int] = []

    def delete_on_the_second(number: int, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
        if number == 1:
            deleted.append(hooks.admin.delete(f"/v1/destinations/{made['id']}").status_code)
        return 204, {}

    with receiving(delete_on_the_second) as receiver:
        made.update(webhook(hooks.admin, receiver.url, audience_ids=[audience["id"]]))
        deliver(hooks_app, lambda: bool(deleted))
        while factories.run_jobs(hooks_app, outbox.DELIVER_HANDLER):
            pass
    assert deleted == [204]
    with hooks_app.state.session_factory() as session:
        jobs = session.scalars(
            select(JobRow).where(
                JobRow.workspace_id == hooks.workspace_id,
                JobRow.handler == outbox.DELIVER_HANDLER,
                JobRow.subject_id == made["id"],
            )
        ).all()
    assert jobs and all(
        (job.state, job.attempts, job.last_error) == ("succeeded", 1, None) for job in jobs
    )
