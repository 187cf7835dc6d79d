"""Recording a destination's delivery attempts: each message moved on (delivered, its next
attempt on the retry schedule, or the destination disabled when it is gone or keeps failing),
and the destinations that need a delivery job.

A destination is leased to one delivery job at a time
(:mod:`audiences.services.delivery_leases`), so its messages go out one after another in
``seq`` order: a message that fails holds back those after it until it is delivered (order
per audience is kept).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from audiences.config import Settings
from audiences.kit.clock import utcnow
from audiences.schemas.jobs import JobState
from audiences.services import attempt_totals, destinations, file_deliveries, outbox, senders
from audiences.services.delivery_sends import Sent, head
from audiences.store.tables import (
    DestinationAttemptRow,
    DestinationMessageRow,
    DestinationRow,
    JobRow,
)

MAX_RETRY_AFTER = 86_400.0
"""The longest pause a receiver's ``Retry-After`` can ask for, in seconds."""


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
    row = session.get_one(DestinationRow, message.destination_id)
    outcome_name = "delivered" if outcome.ok else "failed"
    attempt_totals.add(
        session, subject=attempt_totals.DELIVERY, of=row.id, kind=row.kind, counts={outcome_name: 1}
    )
    if started_at is not None and message.next_attempt_at > started_at:
        return message
    message.attempts += 1
    message.last_status, message.last_error = outcome.status, outcome.error
    message.last_response_ms = outcome.response_ms
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
        # Core statements on the tables (no ORM bulk path: a third of the CPU of each).
        session.connection().execute(
            insert(cast(Table, DestinationAttemptRow.__table__)),
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
        attempt_totals.add(
            session,
            subject=attempt_totals.DELIVERY,
            of=last.send.destination_id,
            kind=last.send.kind,
            counts={"delivered": len(delivered)},
        )
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
    # Locked, so a destination deleted meanwhile cannot take the message between the reads.
    message = session.get(DestinationMessageRow, mirror.message_id, with_for_update=True)
    if message is None or message.status != "pending":
        return  # the destination was deleted meanwhile
    if not file_deliveries.name_files(session, message, written):
        return  # deleted between the two reads
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
    """Operational fields, by a plain UPDATE: they do not move the destination's version (a
    Core statement on the table: a delivery run touches the destination at every step)."""
    table = cast(Table, DestinationRow.__table__)
    session.connection().execute(update(table).where(table.c.id == destination_id).values(**values))
