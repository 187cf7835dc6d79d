"""A destination's delivery log as the API shows it: its messages and their attempts, one
message or everything since a time sent again, and a test message sent now (in three steps,
committed between by the route: see :func:`start_test`)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from audiences.config import Settings
from audiences.errors import Conflict, NotFound
from audiences.kit.clock import utcnow
from audiences.schemas.common import ListQuery, PageResult
from audiences.schemas.destinations import Delivery, DeliveryAttempt
from audiences.services import (
    attempt_totals,
    destinations,
    file_deliveries,
    messages,
    outbox,
    senders,
)
from audiences.services.callers import Caller
from audiences.services.delivery_sends import Send, prepare, send
from audiences.store.repositories.destinations import DeliveryRepository
from audiences.store.tables import DestinationAttemptRow, DestinationMessageRow


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


@dataclass(frozen=True)
class Testing:
    """A test message logged as ``sending``, and what sending it needs once that is committed
    (no database object: it is sent with no transaction open)."""

    workspace_id: str
    destination_id: str
    send: Send
    name: str
    """The test file's name, for a file destination."""


def start_test(session: Session, *, caller: Caller, destination_id: str) -> Testing:
    """Log a ``destination.test`` message as ``sending``: the caller commits it, sends it
    with :func:`send_test` and records how it went with :func:`record_test`, so a slow
    receiver, disk or bucket holds no transaction open."""
    row = destinations.get(session, caller=caller, destination_id=destination_id)
    data = {"destination_id": row.id, "message": "a test message from Audiences"}
    message, body = messages.add_message(
        session, row, messages.TEST, data, 0, None, status="sending"
    )
    name = f"test-{senders.file_stamp(message.created_at)}-{message.id[-12:]}"
    return Testing(row.workspace_id, row.id, prepare(row, message, body, utcnow()), name)


def send_test(testing: Testing, *, settings: Settings) -> senders.Outcome:
    """Send the test message (signed like any other, never retried), or write it as a file;
    never raises: whatever goes wrong (a URL the HTTP client refuses too) is a failed
    attempt, so the message never stays ``sending``."""
    started = time.perf_counter()
    try:
        if testing.send.target is not None:
            return file_deliveries.write_test(testing.send.target, testing.name, settings)
        return send(testing.send, settings=settings)
    except Exception as exc:
        elapsed = int((time.perf_counter() - started) * 1000)
        return senders.Outcome(False, None, elapsed, error=f"{type(exc).__name__}: {exc}"[:500])


def record_test(
    session: Session, *, testing: Testing, outcome: senders.Outcome
) -> DestinationMessageRow:
    """Log the test message's attempt. The destination may have been deleted while it was
    sent (its messages with it): then ``destination_not_found``, and nothing is recorded.
    The message is locked first, so a delete now waits for this transaction."""
    message: DestinationMessageRow | None = session.scalars(
        DeliveryRepository(session, testing.workspace_id, testing.destination_id)
        .base()
        .where(DestinationMessageRow.id == testing.send.message_id)
        .with_for_update()
    ).first()
    if message is None:
        raise NotFound("no such destination (deleted meanwhile)", code="destination_not_found")
    session.add(
        DestinationAttemptRow(
            message_id=message.id,
            destination_id=message.destination_id,
            status=outcome.status,
            response_ms=outcome.response_ms,
            error=outcome.error,
            response=outcome.response,
        )
    )
    attempt_totals.add(
        session,
        subject=attempt_totals.DELIVERY,
        of=testing.destination_id,
        kind=testing.send.kind,
        counts={"delivered" if outcome.ok else "failed": 1},
    )
    message.attempts = 1
    message.status = "delivered" if outcome.ok else "failed"
    message.delivered_at = utcnow() if outcome.ok else None
    message.last_status, message.last_error = outcome.status, outcome.error
    message.last_response_ms = outcome.response_ms
    session.flush()
    return message


def to_model(message: DestinationMessageRow) -> Delivery:
    """The public shape of a message, as the delivery log lists it (no attempts, no body)."""
    return _model(message, None, None)


def detailed(session: Session, message: DestinationMessageRow) -> Delivery:
    """The public shape of one message with its every attempt and its body (the only read of
    a body outside sending)."""
    body = messages.body_of(session, message.id)
    if body is None:  # purged or its destination deleted since it was read
        raise NotFound(f"no delivery {message.id!r} of this destination", code="delivery_not_found")
    return _model(message, attempts_of(session, message), body)


def _model(
    message: DestinationMessageRow, attempts: list[DestinationAttemptRow] | None, body: str | None
) -> Delivery:
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
        payload=None if body is None else json.loads(body),
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
