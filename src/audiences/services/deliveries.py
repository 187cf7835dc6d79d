"""Delivering a destination's messages in order, recording each attempt, retrying on the
schedule and disabling a destination that is gone or keeps failing; and the delivery log as
the API shows it (list, one, redeliver, test).

A destination is leased to one delivery job at a time (``delivering_job`` and
``delivering_until``), so its messages go out one after another in ``seq`` order: a message
that fails holds back those after it until it is delivered (order per audience is kept).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import httpx
from sqlalchemy import Table, bindparam, insert, or_, select, update
from sqlalchemy.orm import Session

from audiences.config import Settings
from audiences.errors import Conflict, NotFound
from audiences.kit.clock import utcnow
from audiences.schemas.common import ListQuery, PageResult
from audiences.schemas.destinations import Delivery, DeliveryAttempt
from audiences.schemas.jobs import JobState
from audiences.services import destinations, file_deliveries, messages, outbox, senders
from audiences.services.callers import Caller
from audiences.store.repositories.destinations import DeliveryRepository
from audiences.store.tables import (
    DestinationAttemptRow,
    DestinationMessageRow,
    DestinationRow,
    JobRow,
)

MAX_RETRY_AFTER = 86_400.0
"""The longest pause a receiver's ``Retry-After`` can ask for, in seconds."""


@dataclass(frozen=True)
class Send:
    """What sending the head message needs, read in a transaction and used outside it."""

    message_id: str
    seq: int
    body: str
    kind: str
    url: str | None
    secrets: list[str]
    destination_id: str
    target: file_deliveries.Target | None = None
    """A file destination's target (None for a webhook)."""


@dataclass(frozen=True)
class Sent:
    """One attempt made: the message, how it went, when it started and ended."""

    send: Send
    outcome: senders.Outcome
    started_at: datetime
    finished_at: datetime


def claim(session: Session, *, destination_id: str, job_id: str, until: datetime) -> bool:
    """Lease the destination to ``job_id`` until ``until`` unless another job holds it."""
    now = utcnow()
    taken = session.execute(
        update(DestinationRow)
        .where(DestinationRow.id == destination_id)
        .where(
            or_(
                DestinationRow.delivering_job.is_(None),
                DestinationRow.delivering_job == job_id,
                DestinationRow.delivering_until < now,
            )
        )
        .values(delivering_job=job_id, delivering_until=until)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(taken, "rowcount", 0))


def renew(
    session: Session, *, destination_id: str, job_id: str, held: datetime, until: datetime
) -> bool:
    """Extend the run's lease to ``until`` if it is still the run's own: the same job and
    the ``held`` it last set (a rerun of the job that took the destination over has set
    another); False when it is lost, and the run must stop sending."""
    renewed = session.execute(
        update(DestinationRow)
        .where(
            DestinationRow.id == destination_id,
            DestinationRow.delivering_job == job_id,
            DestinationRow.delivering_until == held,
        )
        .values(delivering_until=until)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(renewed, "rowcount", 0))


def release(session: Session, *, destination_id: str, job_id: str, held: datetime) -> None:
    """End the run's lease on the destination (``held``: the end it last set), unless a
    rerun of the job has taken it over meanwhile."""
    session.execute(
        update(DestinationRow)
        .where(
            DestinationRow.id == destination_id,
            DestinationRow.delivering_job == job_id,
            DestinationRow.delivering_until == held,
        )
        .values(delivering_job=None, delivering_until=None)
        .execution_options(synchronize_session=False)
    )


def head(session: Session, row: DestinationRow) -> DestinationMessageRow | None:
    """The destination's first undelivered message, due or not."""
    found: DestinationMessageRow | None = session.scalars(
        select(DestinationMessageRow)
        .where(
            DestinationMessageRow.destination_id == row.id,
            DestinationMessageRow.status == "pending",
        )
        .order_by(DestinationMessageRow.seq)
        .limit(1)
    ).first()
    return found


def prepare(row: DestinationRow, message: DestinationMessageRow, now: datetime) -> Send:
    """What sending ``message`` needs, detached from the session."""
    return _send(row, message.id, message.seq, message.body, destinations.active_secrets(row, now))


def _send(row: DestinationRow, message_id: str, seq: int, body: str, secrets: list[str]) -> Send:
    target = file_deliveries.target_of(row) if row.kind == "file" else None
    return Send(message_id, seq, body, row.kind, row.url, secrets, row.id, target)


def next_sends(
    session: Session, row: DestinationRow, *, after: int | None, limit: int, now: datetime
) -> tuple[list[Send], datetime | None]:
    """Up to ``limit`` pending messages of the destination after ``seq`` ``after`` (from its
    head when None), in order, up to the first that is not due: those, and when that one is
    due (None when every one read is due)."""
    stmt = (
        select(
            DestinationMessageRow.id,
            DestinationMessageRow.seq,
            DestinationMessageRow.body,
            DestinationMessageRow.next_attempt_at,
        )
        .where(
            DestinationMessageRow.destination_id == row.id,
            DestinationMessageRow.status == "pending",
        )
        .order_by(DestinationMessageRow.seq)
        .limit(limit)
    )
    if after is not None:
        stmt = stmt.where(DestinationMessageRow.seq > after)
    secrets = destinations.active_secrets(row, now)
    found: list[Send] = []
    for message_id, seq, body, due in session.execute(stmt):
        if due > now:
            return found, due
        found.append(_send(row, message_id, seq, body, secrets))
    return found, None


def due_before(session: Session, row: DestinationRow, *, seq: int, now: datetime) -> bool:
    """Whether a pending message of the destination placed before ``seq`` is due: one a
    client asked to send again while the run was sending those after it."""
    found = session.scalar(
        select(DestinationMessageRow.seq)
        .where(
            DestinationMessageRow.destination_id == row.id,
            DestinationMessageRow.status == "pending",
            DestinationMessageRow.seq < seq,
            DestinationMessageRow.next_attempt_at <= now,
        )
        .limit(1)
    )
    return found is not None


def sends_of(row: DestinationRow, made: list[messages.Made], now: datetime) -> list[Send]:
    """What sending messages a build just made needs (they are due at once)."""
    secrets = destinations.active_secrets(row, now)
    return [_send(row, m.id, m.seq, m.body, secrets) for m in made]


def send(send: Send, *, settings: Settings, client: httpx.Client | None = None) -> senders.Outcome:
    """One attempt: POST to the webhook (through ``client`` when given, to reuse its
    connections), or write the message's files."""
    if send.kind == "webhook":
        return senders.post(
            url=send.url or "",
            secrets=send.secrets,
            msg_id=send.message_id,
            body=send.body,
            settings=settings,
            given=client,
        )
    assert send.target is not None, "a file destination's send carries its target"
    return file_deliveries.write_changes(send.target, send.body, send.seq, settings)


def record(
    session: Session,
    *,
    message_id: str,
    outcome: senders.Outcome,
    settings: Settings,
    now: datetime | None = None,
    started_at: datetime | None = None,
) -> DestinationMessageRow:
    """Log the attempt and move the message on: delivered; or its next attempt on the
    schedule (later if ``Retry-After`` asks); or, on a 410 or past the schedule's end, the
    destination disabled with the reason (the message waits for it to be turned on).

    With ``started_at``, a message a client asked to send again after the attempt started
    is only logged: it stays pending, due now, for the redelivery asked."""
    now = now or utcnow()
    message = session.get_one(DestinationMessageRow, message_id)
    session.add(
        DestinationAttemptRow(
            message_id=message.id,
            destination_id=message.destination_id,
            attempted_at=now,
            status=outcome.status,
            response_ms=outcome.response_ms,
            error=outcome.error,
            response=outcome.response,
        )
    )
    if started_at is not None and message.next_attempt_at > started_at:
        return message
    message.attempts += 1
    message.last_status, message.last_error = outcome.status, outcome.error
    message.last_response_ms = outcome.response_ms
    row = session.get_one(DestinationRow, message.destination_id)
    if outcome.ok:
        message.status, message.delivered_at = "delivered", now
        _touch(session, row.id, last_delivery_at=now, last_error=None)
        return message
    _touch(session, row.id, last_error=outcome.error)
    delays = settings.retry_delays
    if outcome.gone:
        disable(session, row, "the receiver answered 410 Gone: it wants no more messages", now)
    elif message.attempts >= len(delays):
        first = session.scalar(
            select(DestinationAttemptRow.attempted_at)
            .where(DestinationAttemptRow.message_id == message.id)
            .order_by(DestinationAttemptRow.attempted_at)
            .limit(1)
        )
        since = (first or now).isoformat()
        reason = f"every attempt since {since} failed ({message.attempts}); last: {outcome.error}"
        disable(session, row, reason, now)
    else:
        delay = delays[message.attempts]
        if outcome.retry_after is not None:
            delay = max(delay, min(outcome.retry_after, MAX_RETRY_AFTER))
        message.next_attempt_at = now + timedelta(seconds=delay)
    return message


def record_sent(session: Session, sent: list[Sent], *, settings: Settings) -> None:
    """Log the attempts of one destination made in order since the last call, in this one
    transaction: the delivered ones in two statements (their attempts, then the messages
    marked delivered), and the destination touched once; one that failed (the last: a
    failure halts the line) through :func:`record`."""
    delivered = [one for one in sent if one.outcome.ok]
    if delivered:
        session.execute(
            insert(DestinationAttemptRow),
            [
                {
                    "message_id": one.send.message_id,
                    "destination_id": one.send.destination_id,
                    "attempted_at": one.started_at,
                    "status": one.outcome.status,
                    "response_ms": one.outcome.response_ms,
                    "error": None,
                    "response": one.outcome.response,
                }
                for one in delivered
            ],
        )
        table = cast(Table, DestinationMessageRow.__table__)
        # A message a client asked to send again after this attempt started (its next attempt
        # moved past the start) stays pending: it goes out again.
        session.connection().execute(
            update(table)
            .where(table.c.id == bindparam("message_id"))
            .where(table.c.next_attempt_at <= bindparam("began"))
            .values(
                status="delivered",
                delivered_at=bindparam("finished_at"),
                attempts=table.c.attempts + 1,
                last_status=bindparam("answer"),
                last_error=None,
                last_response_ms=bindparam("took"),
            ),
            [
                {
                    "message_id": one.send.message_id,
                    "began": one.started_at,
                    "finished_at": one.finished_at,
                    "answer": one.outcome.status,
                    "took": one.outcome.response_ms,
                }
                for one in delivered
            ],
        )
        last = delivered[-1]
        _touch(
            session, last.send.destination_id, last_delivery_at=last.finished_at, last_error=None
        )
    for one in sent:
        if not one.outcome.ok:
            record(
                session,
                message_id=one.send.message_id,
                outcome=one.outcome,
                settings=settings,
                now=one.finished_at,
                started_at=one.started_at,
            )


def disable(session: Session, row: DestinationRow, reason: str, now: datetime) -> None:
    """Turn the destination off with the reason (its version moves: clients see it)."""
    row.enabled = False
    row.disabled_reason = reason[:2000]
    row.disabled_at = now
    row.updated_at = now
    row.updated_by = "deliveries"
    session.flush()


def finish_full(
    session: Session,
    *,
    mirror: file_deliveries.Mirror,
    written: file_deliveries.Written,
    settings: Settings,
) -> None:
    """Log a ``full`` run written outside the transaction (``file_deliveries.plan`` and
    ``write_full``): its message names the files, then it is recorded as an attempt like a
    webhook's. Delivered: the next write one interval on. Failed: retried on the schedule
    (the destination's next write is the retry), disabling it past the schedule's end."""
    message = session.get(DestinationMessageRow, mirror.message_id)
    if message is None or message.status != "pending":
        return  # the destination was deleted meanwhile
    file_deliveries.name_files(message, written)
    record(session, message_id=message.id, outcome=written.outcome, settings=settings)
    row = session.get_one(DestinationRow, message.destination_id)
    if written.outcome.ok:
        schedule_next(session, row, utcnow())
    else:
        _touch(session, row.id, next_run_at=message.next_attempt_at)


def needing_jobs(session: Session, now: datetime) -> list[DestinationRow]:
    """Enabled destinations with work and no delivery job queued or running: a file
    destination whose next write is due, a webhook with a due message or recorded changes
    past its cursors (the scheduler's safety net; changes wake webhooks themselves)."""
    busy = select(JobRow.subject_id).where(
        JobRow.handler == outbox.DELIVER_HANDLER,
        JobRow.state.in_((JobState.QUEUED.value, JobState.RUNNING.value)),
        JobRow.subject_id.is_not(None),
    )
    rows = session.scalars(
        select(DestinationRow)
        .where(DestinationRow.enabled.is_(True), DestinationRow.id.not_in(busy))
        .order_by(DestinationRow.id)
    ).all()
    found = []
    for row in rows:
        if row.kind == "file":
            if row.next_run_at is not None and row.next_run_at <= now:
                found.append(row)
            continue
        message = head(session, row)
        if message is not None:
            if message.next_attempt_at <= now:
                found.append(row)
        elif destinations.backlog(session, row):
            found.append(row)
    return found


def schedule_next(session: Session, row: DestinationRow, now: datetime) -> None:
    """A file destination's next write, one interval from ``now``."""
    _touch(session, row.id, next_run_at=now + timedelta(seconds=row.interval_seconds or 3600))


def _touch(session: Session, destination_id: str, **values: Any) -> None:
    """Operational fields, by a plain UPDATE: they do not move the destination's version."""
    session.execute(
        update(DestinationRow)
        .where(DestinationRow.id == destination_id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )


def list_(
    session: Session, *, caller: Caller, destination_id: str, query: ListQuery
) -> PageResult[DestinationMessageRow]:
    """A page of the destination's delivery log, newest first by default."""
    destinations.get(session, caller=caller, destination_id=destination_id)
    return DeliveryRepository(session, caller.workspace_id, destination_id).page(query)


def get(
    session: Session, *, caller: Caller, destination_id: str, delivery_id: str
) -> DestinationMessageRow:
    """One message of the destination."""
    destinations.get(session, caller=caller, destination_id=destination_id)
    found = DeliveryRepository(session, caller.workspace_id, destination_id).get(delivery_id)
    if found is None:
        raise NotFound(
            f"no delivery {delivery_id!r} of this destination", code="delivery_not_found"
        )
    return found


def redeliver_one(
    session: Session, *, caller: Caller, destination_id: str, delivery_id: str
) -> DestinationMessageRow:
    """Send one message again (same ``webhook-id`` and body), before those waiting after it.
    Neither a test message nor a ``full`` mode snapshot is sent again (a snapshot rewritten
    now would hold today's members under its old name: ``POST …/reset`` writes a new one)."""
    message = get(session, caller=caller, destination_id=destination_id, delivery_id=delivery_id)
    if message.type == messages.TEST:
        raise Conflict("a test message is not sent again; send a new one", code="delivery_is_test")
    if message.type == file_deliveries.FULL:
        raise Conflict(
            "a full snapshot is not written again under its old name; reset the destination "
            "for a new one",
            code="delivery_is_snapshot",
        )
    _requeue(message)
    _wake_row(session, caller, destination_id)
    return message


def redeliver_since(
    session: Session, *, caller: Caller, destination_id: str, since: datetime
) -> int:
    """Send again every message created at or after ``since``, in their order; how many.
    Test messages and ``full`` mode snapshots are left alone (see :func:`redeliver_one`)."""
    destinations.get(session, caller=caller, destination_id=destination_id)
    found = session.scalars(
        DeliveryRepository(session, caller.workspace_id, destination_id)
        .base()
        .where(DestinationMessageRow.created_at >= since)
        .where(DestinationMessageRow.type.not_in((messages.TEST, file_deliveries.FULL)))
    ).all()
    for message in found:
        _requeue(message)
    _wake_row(session, caller, destination_id)
    return len(found)


def test(
    session: Session, *, caller: Caller, destination_id: str, settings: Settings
) -> DestinationMessageRow:
    """Send a ``destination.test`` message now (signed like any other, never retried) and log
    it; for a file destination, write it as a file. Both outside the transaction: ``session``
    is committed first (the message logged as ``sending``), so a slow receiver, disk or
    bucket holds no transaction open, and the attempt is recorded in its next one."""
    row = destinations.get(session, caller=caller, destination_id=destination_id)
    data = {"destination_id": row.id, "message": "a test message from Audiences"}
    message = messages.add_message(session, row, messages.TEST, data, 0, None, status="sending")
    if row.kind == "webhook":
        ready = prepare(row, message, utcnow())
        session.commit()
        outcome = send(ready, settings=settings)
    else:
        outcome = file_deliveries.write_test(session, row, message, settings)
    session.add(
        DestinationAttemptRow(
            message_id=message.id,
            destination_id=row.id,
            status=outcome.status,
            response_ms=outcome.response_ms,
            error=outcome.error,
            response=outcome.response,
        )
    )
    message.attempts = 1
    message.status = "delivered" if outcome.ok else "failed"
    message.delivered_at = utcnow() if outcome.ok else None
    message.last_status, message.last_error = outcome.status, outcome.error
    message.last_response_ms = outcome.response_ms
    session.flush()
    return message


def to_model(
    message: DestinationMessageRow, *, attempts: list[DestinationAttemptRow] | None = None
) -> Delivery:
    """The public shape of a message; with ``attempts``, its log and body too."""
    return Delivery(
        id=message.id,
        type=message.type,
        status=message.status,
        changes=message.changes,
        attempts=message.attempts,
        created_at=message.created_at,
        next_attempt_at=message.next_attempt_at if message.status == "pending" else None,
        delivered_at=message.delivered_at,
        last_status=message.last_status,
        last_error=message.last_error,
        last_response_ms=message.last_response_ms,
        attempt_log=None
        if attempts is None
        else [
            DeliveryAttempt(
                attempted_at=a.attempted_at,
                status=a.status,
                response_ms=a.response_ms,
                error=a.error,
                response=a.response,
            )
            for a in attempts
        ],
        payload=None if attempts is None else json.loads(message.body),
    )


def attempts_of(session: Session, message: DestinationMessageRow) -> list[DestinationAttemptRow]:
    """Every attempt of a message, oldest first."""
    return list(
        session.scalars(
            select(DestinationAttemptRow)
            .where(DestinationAttemptRow.message_id == message.id)
            .order_by(DestinationAttemptRow.attempted_at, DestinationAttemptRow.id)
        )
    )


def _requeue(message: DestinationMessageRow) -> None:
    message.status = "pending"
    message.attempts = 0
    message.next_attempt_at = utcnow()
    message.delivered_at = None


def _wake_row(session: Session, caller: Caller, destination_id: str) -> None:
    row = destinations.get(session, caller=caller, destination_id=destination_id)
    if row.enabled and row.kind == "webhook":
        outbox.wake(session, workspace_id=row.workspace_id, destination_id=row.id)
