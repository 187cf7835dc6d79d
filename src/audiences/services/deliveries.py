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
from audiences.membership.bitmaps import page
from audiences.schemas.common import ListQuery, PageResult
from audiences.schemas.destinations import Delivery, DeliveryAttempt
from audiences.schemas.jobs import JobState
from audiences.services import destinations, memberships, messages, outbox, senders
from audiences.services.callers import Caller
from audiences.services.runtime import Runtime
from audiences.store.repositories.destinations import DeliveryRepository
from audiences.store.tables import (
    DestinationAttemptRow,
    DestinationMessageRow,
    DestinationRow,
    JobRow,
)

MAX_RETRY_AFTER = 86_400.0
"""The longest pause a receiver's ``Retry-After`` can ask for, in seconds."""
FILE_CHUNK = 10_000


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


def release(session: Session, *, destination_id: str, job_id: str) -> None:
    """End the job's lease on the destination."""
    session.execute(
        update(DestinationRow)
        .where(DestinationRow.id == destination_id, DestinationRow.delivering_job == job_id)
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
    return Send(
        message_id=message.id,
        seq=message.seq,
        body=message.body,
        kind=row.kind,
        url=row.url,
        secrets=destinations.active_secrets(row, now),
        destination_id=row.id,
    )


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
        found.append(Send(message_id, seq, body, row.kind, row.url, secrets, row.id))
    return found, None


def sends_of(row: DestinationRow, made: list[messages.Made], now: datetime) -> list[Send]:
    """What sending messages a build just made needs (they are due at once)."""
    secrets = destinations.active_secrets(row, now)
    return [Send(m.id, m.seq, m.body, row.kind, row.url, secrets, row.id) for m in made]


def send(
    send: Send, *, row: DestinationRow, settings: Settings, client: httpx.Client | None = None
) -> senders.Outcome:
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
    return write_changes(row, send, settings)


def record(
    session: Session,
    *,
    message_id: str,
    outcome: senders.Outcome,
    settings: Settings,
    now: datetime | None = None,
) -> DestinationMessageRow:
    """Log the attempt and move the message on: delivered; or its next attempt on the
    schedule (later if ``Retry-After`` asks); or, on a 410 or past the schedule's end, the
    destination disabled with the reason (the message waits for it to be turned on)."""
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
        session.connection().execute(
            update(table)
            .where(table.c.id == bindparam("message_id"))
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
            )


def disable(session: Session, row: DestinationRow, reason: str, now: datetime) -> None:
    """Turn the destination off with the reason (its version moves: clients see it)."""
    row.enabled = False
    row.disabled_reason = reason[:2000]
    row.disabled_at = now
    row.updated_at = now
    row.updated_by = "deliveries"
    session.flush()


def write_full(
    session: Session, *, runtime: Runtime, row: DestinationRow, settings: Settings
) -> int:
    """A file destination in ``full`` mode: one file per followed audience with every member
    now, named by audience key, time and the message's number; logged as one delivered
    message naming the files. How many files were written."""
    folder = destinations.file_folder(settings, row.path or "")
    now = utcnow()
    message = messages.add_message(session, row, "file.full", {}, 0, now, status="sending")
    written: list[dict[str, Any]] = []
    columns = ["id", *row.attributes]
    for audience in destinations.followed(session, row):
        members = memberships.current(session, runtime=runtime, audience_id=audience.id)
        rows = list(_member_rows(runtime, row, members))
        name = f"{audience.key}-{senders.file_stamp(now)}-{message.seq:08d}-full"
        fmt = row.format or "csv"
        path = senders.write_file(folder, name=name, fmt=fmt, rows=rows, columns=columns)
        written.append({"audience": audience.key, "file": path.name, "rows": len(rows)})
    body = json.loads(message.body)
    body["data"] = {"files": written}
    message.body = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    message.changes = sum(int(entry["rows"]) for entry in written)
    message.status, message.delivered_at, message.attempts = "delivered", utcnow(), 1
    _touch(session, row.id, last_delivery_at=message.delivered_at, last_error=None)
    return len(written)


def write_changes(row: DestinationRow, send: Send, settings: Settings) -> senders.Outcome:
    """A file destination in ``changes`` mode: one file per audience section of the message,
    named by audience key, the message's time and number (a rerun rewrites the same files)."""
    data = json.loads(send.body)
    stamp = senders.file_stamp(datetime.fromisoformat(data["timestamp"].replace("Z", "+00:00")))
    columns = [*senders.COLUMNS, *row.attributes]
    try:
        folder = destinations.file_folder(settings, row.path or "")
        for index, section in enumerate(data["data"]["audiences"]):
            rows = [_flat(change) for change in section["changes"]]
            name = f"{section['key']}-{stamp}-{send.seq:08d}-{index}"
            senders.write_file(
                folder, name=name, fmt=row.format or "csv", rows=rows, columns=columns
            )
    except (OSError, ValueError) as exc:
        return senders.Outcome(False, None, 0, error=f"cannot write: {exc}"[:500])
    return senders.Outcome(True, None, 0)


def _flat(change: dict[str, Any]) -> dict[str, Any]:
    flat = {key: change[key] for key in ("id", "change", "revision")}
    cause = change["cause"]
    flat["cause"] = cause["kind"] + (f":{cause['run_id']}" if "run_id" in cause else "")
    flat.update(change.get("attributes") or {})
    return flat


def _member_rows(runtime: Runtime, row: DestinationRow, members: Any) -> Any:
    after: int | None = None
    while True:
        pids = page(members, after, FILE_CHUNK)
        if not pids:
            return
        after = pids[-1]
        if row.attributes:
            for profile in runtime.profiles.get_profiles_by_pid(row.workspace_id, pids):
                if profile is not None:
                    picked = {name: profile.attributes.get(name) for name in row.attributes}
                    yield {"id": profile.external_id, **picked}
        else:
            for external in runtime.profiles.external_ids_for(row.workspace_id, pids):
                if external is not None:
                    yield {"id": external}


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
    """Send one message again (same ``webhook-id`` and body), before those waiting after it."""
    message = get(session, caller=caller, destination_id=destination_id, delivery_id=delivery_id)
    if message.type == messages.TEST:
        raise Conflict("a test message is not sent again; send a new one", code="delivery_is_test")
    _requeue(message)
    _wake_row(session, caller, destination_id)
    return message


def redeliver_since(
    session: Session, *, caller: Caller, destination_id: str, since: datetime
) -> int:
    """Send again every message created at or after ``since``, in their order; how many."""
    destinations.get(session, caller=caller, destination_id=destination_id)
    found = session.scalars(
        DeliveryRepository(session, caller.workspace_id, destination_id)
        .base()
        .where(DestinationMessageRow.created_at >= since)
        .where(DestinationMessageRow.type != messages.TEST)
    ).all()
    for message in found:
        _requeue(message)
    _wake_row(session, caller, destination_id)
    return len(found)


def test(
    session: Session, *, caller: Caller, destination_id: str, settings: Settings
) -> DestinationMessageRow:
    """Send a ``destination.test`` message now (signed like any other, never retried) and log
    it; for a file destination, write it as a file."""
    row = destinations.get(session, caller=caller, destination_id=destination_id)
    data = {"destination_id": row.id, "message": "a test message from Audiences"}
    message = messages.add_message(session, row, messages.TEST, data, 0, None, status="sending")
    if row.kind == "webhook":
        outcome = send(prepare(row, message, utcnow()), row=row, settings=settings)
    else:
        try:
            folder = destinations.file_folder(settings, row.path or "")
            name = f"test-{senders.file_stamp(utcnow())}-{message.id[-12:]}"
            senders.write_file(folder, name=name, fmt=row.format or "csv", rows=[], columns=["id"])
            outcome = senders.Outcome(True, None, 0)
        except OSError as exc:
            outcome = senders.Outcome(False, None, 0, error=f"cannot write: {exc}"[:500])
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
