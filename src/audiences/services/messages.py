"""Building a destination's messages: the full membership of an audience it follows for the
first time (as ``entered``), then its changes from the outbox after the destination's cursor.

Each build runs in one transaction: the messages are inserted and the cursors advanced
together, so a crash leaves either both or neither. A first delivery (or one after a hole in
the recorded revisions: changes made while the audience was not followed) reads the members
under the membership row lock, and the outbox's writers take that lock before they record
(see :mod:`audiences.services.outbox`), so no change falls between the list and the changes.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any, NamedTuple, cast

from pyroaring import AbstractBitMap, BitMap
from sqlalchemy import Table, insert, select, update
from sqlalchemy.orm import Session

from audiences.config import Settings
from audiences.kit.clock import utcnow
from audiences.membership.bitmaps import deserialize
from audiences.services import destinations, memberships, outbox
from audiences.services.message_bodies import Batch, Group, body, encode
from audiences.services.runtime import Runtime
from audiences.store.tables import (
    AudienceRow,
    DestinationCursorRow,
    DestinationMessageBodyRow,
    DestinationMessageRow,
    DestinationRow,
    MembershipChangeRow,
)

CHANGED = "audience.membership_changed"
TEST = "destination.test"
OUTBOX_ROWS = 500
"""Outbox rows of one audience read per build."""


class Made(NamedTuple):
    """A message a build made: its id (the ``webhook-id``), place in line and body."""

    id: str
    seq: int
    body: str


def wait_until(
    session: Session, row: DestinationRow, settings: Settings, now: datetime
) -> datetime | None:
    """When the destination's waiting changes should go out, if later than ``now``: the oldest
    plus the batch wait, unless a full batch (or a first delivery) is waiting already."""
    cursors = _cursors(session, row.id)
    followed = destinations.followed(session, row)
    if any(audience.id not in cursors for audience in followed):
        return None
    oldest: datetime | None = None
    waiting = 0
    for audience in followed:
        for change in outbox.pending(
            session, audience_id=audience.id, after=cursors[audience.id][0], limit=OUTBOX_ROWS
        ):
            oldest = change.created_at if oldest is None else min(oldest, change.created_at)
            waiting += len(deserialize(change.entered)) + len(deserialize(change.exited))
    if oldest is None or waiting >= settings.webhook_batch_size:
        return None
    due = oldest.timestamp() + settings.webhook_batch_wait_seconds
    return None if due <= now.timestamp() else datetime.fromtimestamp(due, tz=now.tzinfo)


def build(
    session: Session,
    *,
    runtime: Runtime,
    row: DestinationRow,
    settings: Settings,
    limit: int | None = None,
) -> list[Made]:
    """Put what the destination has not had yet into messages; those made, in order. With
    ``limit``, changes for about that many full messages at most (a first delivery's full
    list is made whole), so the first of a large revision can go out before the rest is made.
    """
    cursors = _cursors(session, row.id)
    batch = Batch(settings.webhook_batch_size)
    budget = None if limit is None else limit * settings.webhook_batch_size
    moved: list[str] = []
    for audience in destinations.followed(session, row):
        room = None if budget is None else budget - batch.total
        if room is not None and room <= 0:
            break
        cursor = cursors.get(audience.id)
        rows = [] if cursor is None else _changes(session, audience.id, cursor[0])
        if cursor is None or rows is None:
            reached = (_snapshot(session, runtime, row, audience, batch), 0)
        elif rows:
            reached = _changed(runtime, row, audience, rows, batch, skip=cursor[1], room=room)
        else:
            continue
        _advance(session, row, audience.id, reached, exists=cursor is not None)
        if cursor is None or reached[0] > cursor[0]:  # a revision done: its row may go
            moved.append(audience.id)
    batch.close()
    made = _add_changed(session, row, batch.done)
    outbox.prune(session, moved)
    return made


def add_message(
    session: Session,
    row: DestinationRow,
    kind: str,
    data: dict[str, Any],
    changes: int,
    first_change_at: datetime | None,
    *,
    status: str = "pending",
) -> tuple[DestinationMessageRow, str]:
    """A new message at the end of the destination's line, and its body."""
    now = utcnow()
    message = DestinationMessageRow(
        id=f"msg_{uuid.uuid4().hex}",
        workspace_id=row.workspace_id,
        destination_id=row.id,
        seq=_next_seqs(session, row, 1),
        type=kind,
        changes=changes,
        status=status,
        attempts=0,
        next_attempt_at=now,
        first_change_at=first_change_at,
        created_at=now,
    )
    text = body(kind, encode(data), now)
    session.add(message)
    session.flush()  # the message before its body (the body's foreign key)
    session.add(DestinationMessageBodyRow(message_id=message.id, body=text))
    session.flush()
    return message, text


def body_of(session: Session, message_id: str) -> str | None:
    """A message's body (read only where it is sent or shown); None when the message was
    deleted (purged, or its destination deleted) since the caller read it: on PostgreSQL each
    statement sees the latest commits."""
    found: str | None = session.execute(
        select(DestinationMessageBodyRow.body).where(
            DestinationMessageBodyRow.message_id == message_id
        )
    ).scalar_one_or_none()
    return found


def _add_changed(
    session: Session,
    row: DestinationRow,
    done: list[tuple[str, int, datetime | None]],
) -> list[Made]:
    """The messages of a build at the end of the destination's line, in two statements: the
    messages, then their bodies (a table of their own: see ``DestinationMessageBodyRow``)."""
    if not done:
        return []
    last = _next_seqs(session, row, len(done))
    now = utcnow()
    made = [
        Made(f"msg_{uuid.uuid4().hex}", last - len(done) + number, body(CHANGED, data, now))
        for number, (data, _, _) in enumerate(done, start=1)
    ]
    connection = session.connection()  # Core: the ORM's bulk path costs more than the rows
    connection.execute(
        insert(cast(Table, DestinationMessageRow.__table__)),
        [
            {
                "id": message.id,
                "workspace_id": row.workspace_id,
                "destination_id": row.id,
                "seq": message.seq,
                "type": CHANGED,
                "changes": count,
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": now,
                "first_change_at": first,
                "created_at": now,
            }
            for message, (_, count, first) in zip(made, done, strict=True)
        ],
    )
    connection.execute(
        insert(cast(Table, DestinationMessageBodyRow.__table__)),
        [{"message_id": message.id, "body": message.body} for message in made],
    )
    return made


def _next_seqs(session: Session, row: DestinationRow, count: int) -> int:
    """Take ``count`` numbers from the destination's message counter; the last one (a plain
    UPDATE, so the destination's version, its ETag, stays)."""
    last: int = session.execute(
        update(DestinationRow)
        .where(DestinationRow.id == row.id)
        .values(message_seq=DestinationRow.message_seq + count)
        .returning(DestinationRow.message_seq)
        .execution_options(synchronize_session=False)
    ).scalar_one()
    return last


def _cursors(session: Session, destination_id: str) -> dict[str, tuple[int, int]]:
    """Each followed audience's cursor: (revision, position)."""
    rows = session.execute(
        select(
            DestinationCursorRow.audience_id,
            DestinationCursorRow.revision,
            DestinationCursorRow.position,
        ).where(DestinationCursorRow.destination_id == destination_id)
    )
    return {audience_id: (revision, position) for audience_id, revision, position in rows}


def _changes(session: Session, audience_id: str, cursor: int) -> list[MembershipChangeRow] | None:
    """The outbox rows after ``cursor``, or None when revisions are missing (the audience
    changed while not followed): then only the full list is right."""
    rows = outbox.pending(session, audience_id=audience_id, after=cursor, limit=OUTBOX_ROWS)
    if rows:
        expected = range(cursor + 1, cursor + 1 + len(rows))
        return rows if [r.revision for r in rows] == list(expected) else None
    state = memberships.states(session, [audience_id]).get(audience_id)
    return None if state is not None and state.revision > cursor else rows


def _snapshot(
    session: Session,
    runtime: Runtime,
    row: DestinationRow,
    audience: destinations.Followed,
    batch: Batch,
) -> int:
    state = memberships.locked(session, session.get_one(AudienceRow, audience.id))
    members = memberships.members_of(session, state, runtime.bitmaps)
    full = {"kind": "full"}
    group = _group(runtime, row, BitMap(members), "entered", state.revision, full, utcnow())
    batch.add(audience.id, audience.key, True, [group])
    return state.revision


def _changed(
    runtime: Runtime,
    row: DestinationRow,
    audience: destinations.Followed,
    rows: list[MembershipChangeRow],
    batch: Batch,
    *,
    skip: int,
    room: int | None,
) -> tuple[int, int]:
    """The changes of ``rows`` into the batch, the first row's first ``skip`` left out (made
    before), at most ``room`` of them; the cursor reached: (revision, position)."""
    groups: list[Group] = []
    reached = (rows[0].revision - 1, skip)
    taken = 0
    for change in rows:
        parts = [("entered", deserialize(change.entered)), ("exited", deserialize(change.exited))]
        total = sum(len(pids) for _, pids in parts)
        start = reached[1]
        end = total if room is None else min(total, start + room - taken)
        taken += end - start
        cause = _cause(change.cause)
        offset = 0
        for kind, pids in parts:
            low, high = max(start - offset, 0), min(end - offset, len(pids))
            if low < high:
                picked = pids[low:high]
                made = _group(runtime, row, picked, kind, change.revision, cause, change.created_at)
                groups.append(made)
            offset += len(pids)
        if end < total:
            reached = (change.revision - 1, end)
            break
        reached = (change.revision, 0)
    if any(group.ids for group in groups):
        batch.add(audience.id, audience.key, False, groups)
    return reached


def _group(
    runtime: Runtime,
    row: DestinationRow,
    pids: AbstractBitMap,
    kind: str,
    revision: int,
    cause: dict[str, Any],
    at: datetime,
) -> Group:
    """The changes of ``pids`` that still have a profile (an erased profile has no id to
    send), recorded at ``at``, with the attributes the destination asks for."""
    if row.attributes:
        ordered = list(pids)
        ids: list[str] = []
        picked: list[str] = []
        for profile in runtime.profiles.get_profiles_by_pid(row.workspace_id, ordered):
            if profile is not None:
                ids.append(profile.external_id)
                chosen = {name: profile.attributes.get(name) for name in row.attributes}
                picked.append(encode(json.loads(json.dumps(chosen, default=str))))
        return Group(ids, kind, revision, cause, at, picked)
    # The bitmap's pids as one array: no Python int each (a step asks up to 64,000).
    found = runtime.profiles.external_ids_for(row.workspace_id, pids.to_array())
    if None in found:
        found = [external for external in found if external is not None]
    return Group(cast(list[str], found), kind, revision, cause, at)


def _cause(text: str) -> dict[str, Any]:
    """``run:<id>`` → ``{"kind": "run", "run_id": …}``; ``write``, ``stream``, ``erasure``,
    ``expiry`` → ``{"kind": …}``."""
    kind, _, ident = text.partition(":")
    return {"kind": kind, "run_id": ident} if kind == "run" else {"kind": kind}


def _advance(
    session: Session,
    row: DestinationRow,
    audience_id: str,
    reached: tuple[int, int],
    *,
    exists: bool,
) -> None:
    revision, position = reached
    if exists:
        session.execute(
            update(DestinationCursorRow)
            .where(
                DestinationCursorRow.destination_id == row.id,
                DestinationCursorRow.audience_id == audience_id,
            )
            .values(revision=revision, position=position, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
    else:
        session.add(
            DestinationCursorRow(
                destination_id=row.id,
                audience_id=audience_id,
                workspace_id=row.workspace_id,
                revision=revision,
                position=position,
            )
        )
        session.flush()
