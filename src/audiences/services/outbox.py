"""The membership outbox: each change of a subscribed audience's members, recorded in the
change's own transaction, and read by delivery after each destination's cursor.

:func:`record` is called by :mod:`audiences.services.memberships` for every new revision
(the one place every membership change passes through). It writes a
:class:`~audiences.store.tables.MembershipChangeRow` only when some destination subscribes to
the audience, and queues a delivery job for each enabled webhook among them (unless one is
queued already), in the same transaction: a change that commits is in the outbox, and one
that rolls back never was.

Why no change is lost: a destination's first delivery of an audience reads its members under
the membership row lock (:func:`audiences.services.memberships.locked`), after the
destination was committed. A writer that took the lock before holds a revision the snapshot
includes; one that takes it after sees the destination when it looks for subscribers (each
statement sees what committed before it) and records its change here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from audiences import queue
from audiences.membership.bitmaps import Diff, serialize
from audiences.schemas.jobs import JobKind, JobState
from audiences.store.tables import (
    AudienceRow,
    DestinationCursorRow,
    DestinationRow,
    JobRow,
    MembershipChangeRow,
)

DELIVER_HANDLER = "destinations.deliver"


@dataclass(frozen=True)
class Subscriber:
    """What the outbox needs to know of a destination: whom it follows, and whether changes
    wake it (enabled webhooks; file destinations run on their schedule)."""

    id: str
    workspace_id: str
    wakes: bool
    audience_ids: frozenset[str] | None
    group_id: str | None
    all_audiences: bool

    def follows(self, audience: AudienceRow) -> bool:
        """Whether the subscription covers ``audience`` now."""
        if self.all_audiences:
            return True
        if self.group_id is not None:
            return audience.group_id == self.group_id
        return self.audience_ids is not None and audience.id in self.audience_ids


def subscribers(session: Session, workspace_id: str) -> list[Subscriber]:
    """The workspace's destinations, enabled or not (a disabled one keeps its backlog)."""
    rows = session.execute(
        select(
            DestinationRow.id,
            DestinationRow.kind,
            DestinationRow.enabled,
            DestinationRow.audience_ids,
            DestinationRow.group_id,
            DestinationRow.all_audiences,
        ).where(DestinationRow.workspace_id == workspace_id)
    ).all()
    return [
        Subscriber(
            id=row.id,
            workspace_id=workspace_id,
            wakes=row.enabled and row.kind == "webhook",
            audience_ids=None if row.audience_ids is None else frozenset(row.audience_ids),
            group_id=row.group_id,
            all_audiences=row.all_audiences,
        )
        for row in rows
    ]


def record(
    session: Session,
    *,
    audience: AudienceRow,
    revision: int,
    change: Diff,
    cause: str,
    found: list[Subscriber],
    woken: set[str],
) -> None:
    """Write the outbox row of ``audience``'s ``revision`` if a destination in ``found``
    follows it, and wake the webhooks among them not in ``woken`` (then added to it).

    Revisions that change nobody are recorded too while subscribed, so a destination's
    revisions have no holes (a hole means it missed changes and needs the full list again).
    """
    following = [s for s in found if s.follows(audience)]
    if not following:
        return
    session.add(
        MembershipChangeRow(
            audience_id=audience.id,
            revision=revision,
            workspace_id=audience.workspace_id,
            entered=serialize(change.entered),
            exited=serialize(change.exited),
            cause=cause[:80],
        )
    )
    if not (change.entered or change.exited):
        return
    for subscriber in following:
        if subscriber.wakes and subscriber.id not in woken:
            woken.add(subscriber.id)
            wake(session, workspace_id=subscriber.workspace_id, destination_id=subscriber.id)


def wake(
    session: Session,
    *,
    workspace_id: str,
    destination_id: str,
    run_after: datetime | None = None,
) -> None:
    """Queue a delivery job for the destination (at ``run_after``, default now) unless one is
    queued already."""
    waiting = session.scalar(
        select(JobRow.id)
        .where(
            JobRow.workspace_id == workspace_id,
            JobRow.subject_id == destination_id,
            JobRow.handler == DELIVER_HANDLER,
            JobRow.state == JobState.QUEUED.value,
        )
        .limit(1)
    )
    if waiting is None:
        queue.enqueue(
            session,
            workspace_id=workspace_id,
            kind=JobKind.DELIVERY,
            handler=DELIVER_HANDLER,
            payload={"destination_id": destination_id},
            subject_id=destination_id,
            max_attempts=1000,
            created_by="outbox",
            run_after=run_after,
            flush=False,
        )


def pending(
    session: Session, *, audience_id: str, after: int, limit: int
) -> list[MembershipChangeRow]:
    """The audience's outbox rows above revision ``after``, oldest first."""
    stmt = (
        select(MembershipChangeRow)
        .where(MembershipChangeRow.audience_id == audience_id)
        .where(MembershipChangeRow.revision > after)
        .order_by(MembershipChangeRow.revision)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def backlog(session: Session, cursors: dict[str, int]) -> int:
    """How many recorded revisions of these audiences lie past their cursors."""
    total = 0
    for audience_id, revision in cursors.items():
        total += (
            session.scalar(
                select(func.count())
                .select_from(MembershipChangeRow)
                .where(
                    MembershipChangeRow.audience_id == audience_id,
                    MembershipChangeRow.revision > revision,
                )
            )
            or 0
        )
    return total


def prune(session: Session, audience_ids: Iterable[str]) -> None:
    """Delete the outbox rows every cursor of these audiences has passed (all of them when
    no destination holds a cursor on the audience)."""
    for audience_id in sorted(set(audience_ids)):
        lowest = session.scalar(
            select(func.min(DestinationCursorRow.revision)).where(
                DestinationCursorRow.audience_id == audience_id
            )
        )
        stmt = delete(MembershipChangeRow).where(MembershipChangeRow.audience_id == audience_id)
        if lowest is not None:
            stmt = stmt.where(MembershipChangeRow.revision <= lowest)
        session.execute(stmt)


def prune_all(session: Session) -> None:
    """:func:`prune` every audience with outbox rows (hourly housekeeping: rows of audiences
    no destination follows any more, or whose destinations were deleted)."""
    prune(session, session.scalars(select(MembershipChangeRow.audience_id).distinct()))
