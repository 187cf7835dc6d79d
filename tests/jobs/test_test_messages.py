"""``POST …/test`` against what can happen while its message is in flight: the destination
deleted meanwhile, a URL the HTTP client refuses, and a server that stops before recording
the outcome (the message left ``sending`` until the housekeeping marks it failed)."""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi import FastAPI
from sqlalchemy import func, select

from audiences.jobs import schedule
from audiences.schemas.api_keys import Role
from audiences.services import delivery_log, maintenance
from audiences.services.callers import Caller
from audiences.store.tables import DestinationAttemptRow, DestinationMessageRow, DestinationRow
from tests.factories import Tenant
from tests.jobs.test_deliveries import static, webhook
from tests.webhook_receiver import receiving


def _logged(app: FastAPI, destination_id: str) -> tuple[int, int]:
    """How many messages and attempts the database holds for the destination."""
    with app.state.session_factory() as session:
        messages = session.scalar(
            select(func.count())
            .select_from(DestinationMessageRow)
            .where(DestinationMessageRow.destination_id == destination_id)
        )
        attempts = session.scalar(
            select(func.count())
            .select_from(DestinationAttemptRow)
            .where(DestinationAttemptRow.destination_id == destination_id)
        )
    return int(messages or 0), int(attempts or 0)


def test_a_destination_deleted_while_its_test_is_sent_answers_not_found(
    hooks_app: FastAPI, hooks: Tenant
) -> None:
    """The delete goes through while the receiver holds the request; the test then answers
    404 ``destination_not_found`` and records nothing (never a 500)."""
    audience = static(hooks.admin)
    deleted: list[int] = []

    def delete(number: int, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
        deleted.append(hooks.admin.delete(f"/v1/destinations/{made['id']}").status_code)
        return 200, {}

    with receiving(delete) as receiver:
        made = webhook(hooks.admin, receiver.url, audience_ids=[audience["id"]])
        receiver.secrets.append(made["secret"])
        tested = hooks.admin.post(f"/v1/destinations/{made['id']}/test")
    assert deleted == [204]
    assert tested.status_code == 404, tested.text
    assert tested.json()["code"] == "destination_not_found"
    assert _logged(hooks_app, made["id"]) == (0, 0)


def test_a_url_the_http_client_refuses_fails_the_test(hooks_app: FastAPI, hooks: Tenant) -> None:
    """A URL saved before host names were checked, that the HTTP client cannot even send to
    (a host label past 63 characters, refused when saved now), is a failed attempt in the
    log, not a 500 and a message left ``sending``."""
    audience = static(hooks.admin)
    made = webhook(hooks.admin, "https://receiver.example/hook", audience_ids=[audience["id"]])
    with hooks_app.state.session_factory.begin() as session:
        session.get_one(DestinationRow, made["id"]).url = f"https://{'a' * 70}.example/hook"
    tested = hooks.admin.post(f"/v1/destinations/{made['id']}/test")
    assert tested.status_code == 200, tested.text
    assert tested.json()["delivered"] is False
    delivery = tested.json()["delivery"]
    assert delivery["status"] == "failed" and delivery["last_error"]
    assert [a["error"] for a in delivery["attempt_log"]] == [delivery["last_error"]]
    failed = hooks.admin.get(f"/v1/destinations/{made['id']}/deliveries?status=failed")
    assert [d["id"] for d in failed.json()["data"]] == [delivery["id"]]


def test_housekeeping_fails_a_test_message_left_sending(hooks_app: FastAPI, hooks: Tenant) -> None:
    """A server that stops between committing a test message and recording its outcome leaves
    it ``sending``; once a send cannot still be running (the longest timeout plus a margin),
    the hourly housekeeping marks it ``failed`` (``interrupted``), and retention later
    deletes it like any finished message."""
    audience = static(hooks.admin)
    made = webhook(hooks.admin, "https://receiver.example/hook", audience_ids=[audience["id"]])
    with hooks_app.state.session_factory.begin() as session:  # the request's first step only
        caller = Caller(hooks.workspace_id, hooks.slug, "k", Role.ADMIN)
        testing = delivery_log.start_test(session, caller=caller, destination_id=made["id"])
    path = f"/v1/destinations/{made['id']}/deliveries/{testing.send.message_id}"

    def shown() -> tuple[str, str | None]:
        found = hooks.admin.get(path).json()
        return found["status"], found["last_error"]

    settings = hooks_app.state.settings
    longest = max(settings.webhook_timeout_seconds, settings.destination_s3_timeout_seconds)
    made_at = datetime.fromisoformat(hooks.admin.get(path).json()["created_at"])
    still_running = made_at + timedelta(seconds=longest) + maintenance.INTERRUPTED_MARGIN
    schedule.Housekeeping(hooks_app.state.session_factory, settings).run(still_running)
    assert shown() == ("sending", None)
    later = still_running + timedelta(minutes=1)
    schedule.Housekeeping(hooks_app.state.session_factory, settings).run(later)
    assert shown() == ("failed", maintenance.INTERRUPTED)
    with hooks_app.state.session_factory.begin() as session:
        again = maintenance.fail_interrupted(session, settings=settings, now=later)
    assert again == 0  # idempotent
    days = settings.delivery_log_retention_days
    with hooks_app.state.session_factory.begin() as session:
        purged = maintenance.purge_delivery_log(
            session, retention_days=days, now=later + timedelta(days=days)
        )
    assert purged >= 1 and hooks.admin.get(path).status_code == 404
