"""Retention of the delivery log: the scheduler's hourly housekeeping deletes the messages done
with before ``AUDIENCES_DELIVERY_LOG_RETENTION_DAYS``, with their attempts, and never one not
delivered yet. The clock is moved by giving the housekeeping a later ``now``."""

from __future__ import annotations

from datetime import timedelta

from fastapi import FastAPI
from sqlalchemy import func, select

from audiences.jobs import schedule
from audiences.kit.clock import utcnow
from audiences.services import maintenance
from audiences.store.tables import (
    DestinationAttemptRow,
    DestinationMessageBodyRow,
    DestinationMessageRow,
)
from tests.factories import Tenant
from tests.jobs.test_deliveries import deliver, static, webhook, write
from tests.webhook_receiver import receiving


def test_housekeeping_drops_finished_messages_past_retention_never_undelivered_ones(
    hooks_app: FastAPI, hooks: Tenant
) -> None:
    answers = {"failing": False}

    def script(number: int, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
        return (503, {"Retry-After": "3600"}) if answers["failing"] else (204, {})

    audience = static(hooks.admin)
    write(hooks_app, hooks.admin, audience["id"], "add", ["a"])
    with receiving(script) as receiver:
        made = webhook(hooks.admin, receiver.url, audience_ids=[audience["id"]])
        receiver.secrets.append(made["secret"])
        deliver(hooks_app, lambda: len(receiver.accepted) == 1)
        assert hooks.admin.post(f"/v1/destinations/{made['id']}/test").status_code == 200
        answers["failing"] = True
        write(hooks_app, hooks.admin, audience["id"], "add", ["b"])
        deliver(hooks_app, lambda: len(receiver.requests) == 3)
    log_path = f"/v1/destinations/{made['id']}/deliveries"

    def log() -> list[tuple[str, str]]:
        return [(d["type"], d["status"]) for d in hooks.admin.get(log_path).json()["data"]]

    def attempts() -> int:
        with hooks_app.state.session_factory() as session:
            counted = session.scalar(
                select(func.count())
                .select_from(DestinationAttemptRow)
                .where(DestinationAttemptRow.destination_id == made["id"])
            )
        return int(counted or 0)

    def bodies() -> int:
        with hooks_app.state.session_factory() as session:
            counted = session.scalar(
                select(func.count())
                .select_from(DestinationMessageBodyRow)
                .join(DestinationMessageRow)
                .where(DestinationMessageRow.destination_id == made["id"])
            )
            every = session.scalar(select(func.count()).select_from(DestinationMessageBodyRow))
            messages = session.scalar(select(func.count()).select_from(DestinationMessageRow))
        assert every == messages, "a body outlived its message"
        return int(counted or 0)

    waiting = ("audience.membership_changed", "pending")
    assert sorted(log()) == sorted(
        [waiting, ("audience.membership_changed", "delivered"), ("destination.test", "delivered")]
    )
    assert attempts() == 3 and bodies() == 3
    days = hooks_app.state.settings.delivery_log_retention_days
    assert days == 30  # the documented default
    now = utcnow()
    with hooks_app.state.session_factory.begin() as session:
        kept = maintenance.purge_delivery_log(
            session, retention_days=days, now=now + timedelta(days=days - 1)
        )
    assert kept == 0 and len(log()) == 3  # not old enough yet

    later = now + timedelta(days=days, minutes=1)
    with hooks_app.state.session_factory.begin() as session:  # a batch of one, then the rest
        first = maintenance.purge_delivery_log(session, retention_days=days, now=later, limit=1)
    # Its attempt and its body went with it.
    assert first == 1 and len(log()) == 2 and attempts() == 2 and bodies() == 2
    schedule.Housekeeping(hooks_app.state.session_factory, hooks_app.state.settings).run(later)
    assert log() == [waiting]  # the undelivered message stays, however old
    assert attempts() == 1 and bodies() == 1  # its own attempt and body stay with it
    with hooks_app.state.session_factory.begin() as session:
        forever = maintenance.purge_delivery_log(
            session, retention_days=0, now=later + timedelta(days=10_000)
        )
    assert forever == 0 and log() == [waiting]
