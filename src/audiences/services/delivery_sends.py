"""What sending a destination's messages needs, read in a transaction and used outside it:
its head, the pending messages after those handed to the sending line, and one attempt."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from audiences.config import Settings
from audiences.services import destinations, egress, file_deliveries, messages, senders
from audiences.store.tables import DestinationMessageBodyRow, DestinationMessageRow, DestinationRow


@dataclass(frozen=True)
class Send:
    """What sending one message needs (a webhook POST or a file write), read in a transaction
    and used outside it: by the sending line for a delivery run's messages, and by
    ``POST …/test`` for its test message."""

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


def prepare(row: DestinationRow, message: DestinationMessageRow, body: str, now: datetime) -> Send:
    """What sending ``message`` (whose body is ``body``) needs, detached from the session."""
    return _send(row, message.id, message.seq, body, destinations.active_secrets(row, now))


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
            DestinationMessageBodyRow.body,
            DestinationMessageRow.next_attempt_at,
        )
        .join(
            DestinationMessageBodyRow,
            DestinationMessageBodyRow.message_id == DestinationMessageRow.id,
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


def send(
    send: Send, *, settings: Settings, client: egress.PinnedClient | None = None
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
    assert send.target is not None, "a file destination's send carries its target"
    return file_deliveries.write_changes(send.target, send.body, send.seq, settings)
