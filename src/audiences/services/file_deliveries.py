"""What a file destination writes: in ``full`` mode every member of each followed audience
(a mirror, on its schedule), in ``changes`` mode the entered and exited of one message, and a
test file; each through :mod:`audiences.services.file_targets` (a local folder or a bucket).

Failures never raise: each write returns an :class:`~audiences.services.senders.Outcome`
whose error reads ``<code>: <message>`` (docs/errors.md), which the delivery log records and
the retry schedule follows like a webhook's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pyroaring import AbstractBitMap
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from audiences.config import Settings
from audiences.membership.bitmaps import page
from audiences.services import destinations, file_targets, memberships, messages, senders
from audiences.services.runtime import Runtime
from audiences.store.tables import DestinationMessageBodyRow, DestinationMessageRow, DestinationRow

FULL = "file.full"
"""The type of a ``full`` mode run's message in the delivery log."""
FILE_CHUNK = 10_000
"""Members whose ids (and attributes) are read per engine call."""


@dataclass
class Written:
    """How a ``full`` run went: the files written (audience, file, rows) and the outcome."""

    outcome: senders.Outcome
    files: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Mirror:
    """A ``full`` run planned in a transaction and written outside it (a slow disk or bucket
    never holds the metadata database's write lock): its message, and each followed
    audience's key and members as they were read."""

    message_id: str
    seq: int
    created_at: datetime
    workspace_id: str
    path: str
    fmt: str
    attributes: list[str]
    audiences: list[tuple[str, AbstractBitMap]]


def full_message(session: Session, row: DestinationRow, now: datetime) -> DestinationMessageRow:
    """The message a ``full`` run is logged under: the one whose write failed (or whose run
    crashed) and waits for its retry, so attempts add up on the schedule and the retry
    rewrites the same names; or a new one. Only ever the newest snapshot: an older one is not
    rewritten with today's members (``delivery_log.redeliver_one`` refuses to send one again)."""
    last: DestinationMessageRow | None = session.scalars(
        select(DestinationMessageRow)
        .where(DestinationMessageRow.destination_id == row.id, DestinationMessageRow.type == FULL)
        .order_by(DestinationMessageRow.seq.desc())
        .limit(1)
    ).first()
    if last is not None and last.status == "pending":
        return last
    return messages.add_message(session, row, FULL, {}, 0, now)[0]


def plan(session: Session, *, runtime: Runtime, row: DestinationRow, now: datetime) -> Mirror:
    """What a ``full`` run writes: every followed audience's members now (read first, in one
    call), and its message (made now, or the one waiting for its retry)."""
    followed = destinations.followed(session, row)
    members = memberships.many(
        session, runtime=runtime, audience_ids=[audience.id for audience in followed]
    )
    message = full_message(session, row, now)
    return Mirror(
        message_id=message.id,
        seq=message.seq,
        created_at=message.created_at,
        workspace_id=row.workspace_id,
        path=row.path or "",
        fmt=row.format or "csv",
        attributes=list(row.attributes),
        audiences=[(audience.key, members[audience.id]) for audience in followed],
    )


def write_full(
    runtime: Runtime,
    mirror: Mirror,
    settings: Settings,
    *,
    between: Callable[[], None] | None = None,
) -> Written:
    """One file per audience of ``mirror`` with its every member, named by audience key, the
    message's time and number (``<key>-<time>-<seq>-full``); stops at the first file that
    fails (each file is whole or absent). No database session: the engine is read and the
    files written outside any transaction. ``between`` runs before each file after the first
    (the job's checkpoint and lease renewal; what it raises ends the run, the message left
    for the next)."""
    stamp = senders.file_stamp(mirror.created_at)
    columns = ["id", *mirror.attributes]
    written = Written(senders.Outcome(True, None, 0))
    for index, (key, members) in enumerate(mirror.audiences):
        if index and between is not None:
            between()
        counted = _Counted(_member_rows(runtime, mirror.workspace_id, mirror.attributes, members))
        try:
            file = file_targets.write(
                settings,
                mirror.path,
                name=f"{key}-{stamp}-{mirror.seq:08d}-full",
                fmt=mirror.fmt,
                rows=counted,
                columns=columns,
            )
        except file_targets.WriteFailed as failed:
            written.outcome = senders.Outcome(False, None, 0, error=str(failed))
            break
        written.files.append({"audience": key, "file": file, "rows": counted.rows})
    return written


def name_files(session: Session, message: DestinationMessageRow, written: Written) -> bool:
    """The message's body names the files a ``full`` run wrote, and counts their rows; False
    when the message was deleted since it was read (nothing to name)."""
    stored = messages.body_of(session, message.id)
    if stored is None:
        return False
    body = json.loads(stored)
    body["data"] = {"files": written.files}
    session.execute(
        update(DestinationMessageBodyRow)
        .where(DestinationMessageBodyRow.message_id == message.id)
        .values(body=json.dumps(body, separators=(",", ":"), ensure_ascii=False))
        .execution_options(synchronize_session=False)
    )
    message.changes = sum(int(entry["rows"]) for entry in written.files)
    return True


@dataclass(frozen=True)
class Target:
    """Where and how a file destination's messages are written, copied from its row so a
    sending thread needs no database object."""

    path: str
    fmt: str
    attributes: tuple[str, ...]


def target_of(row: DestinationRow) -> Target:
    """The file target of ``row`` (a file destination) as it stands."""
    return Target(row.path or "", row.format or "csv", tuple(row.attributes))


def write_changes(target: Target, body: str, seq: int, settings: Settings) -> senders.Outcome:
    """A ``changes`` message: one file per audience section of it, named by audience key, the
    message's time and number (a rerun rewrites the same files)."""
    data = json.loads(body)
    stamp = senders.file_stamp(datetime.fromisoformat(data["timestamp"].replace("Z", "+00:00")))
    columns = [*senders.COLUMNS, *target.attributes]
    try:
        # A ``full`` run's message left waiting when the mode changed has no sections.
        for index, section in enumerate(data["data"].get("audiences", [])):
            file_targets.write(
                settings,
                target.path,
                name=f"{section['key']}-{stamp}-{seq:08d}-{index}",
                fmt=target.fmt,
                rows=[_flat(change) for change in section["changes"]],
                columns=columns,
            )
    except file_targets.WriteFailed as failed:
        return senders.Outcome(False, None, 0, error=str(failed))
    return senders.Outcome(True, None, 0)


def write_test(target: Target, name: str, settings: Settings) -> senders.Outcome:
    """A test file with no rows named ``name`` (``test-<time>-<message>``): proves the target
    takes files. No database session: it is written outside any transaction."""
    try:
        file_targets.write(
            settings, target.path, name=name, fmt=target.fmt, rows=[], columns=["id"]
        )
    except file_targets.WriteFailed as failed:
        return senders.Outcome(False, None, 0, error=str(failed))
    return senders.Outcome(True, None, 0)


class _Counted:
    """Rows passed through, counted as they go (a file is written as its rows are read)."""

    def __init__(self, rows: Iterator[dict[str, Any]]) -> None:
        self._rows = rows
        self.rows = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for row in self._rows:
            self.rows += 1
            yield row


def _flat(change: dict[str, Any]) -> dict[str, Any]:
    flat = {key: change[key] for key in ("id", "change", "revision")}
    cause = change["cause"]
    flat["cause"] = cause["kind"] + (f":{cause['run_id']}" if "run_id" in cause else "")
    flat.update(change.get("attributes") or {})
    return flat


def _member_rows(
    runtime: Runtime, workspace_id: str, attributes: list[str], members: AbstractBitMap
) -> Iterator[dict[str, Any]]:
    after: int | None = None
    while True:
        pids = page(members, after, FILE_CHUNK)
        if not pids:
            return
        after = pids[-1]
        if attributes:
            for profile in runtime.profiles.get_profiles_by_pid(workspace_id, pids):
                if profile is not None:
                    picked = {name: profile.attributes.get(name) for name in attributes}
                    yield {"id": profile.external_id, **picked}
        else:
            for external in runtime.profiles.external_ids_for(workspace_id, pids):
                if external is not None:
                    yield {"id": external}
