"""JSON membership writes of static audiences: accepted with their ids kept on the write row,
applied several at a time by the ``membership.write`` job, within a bounded backlog.

A write's ids live in exactly one place until it is applied: its :class:`MemberWriteRow`
(``body``, compressed), written in the transaction that numbers it, so any worker of any process
can apply it and nothing outside the database needs sweeping. A worker that picks up one write
also takes the writes of the same audience still queued behind it (:func:`batch`) and applies
them as one change (:func:`apply`): the cost of a write is mostly fixed (the audience's lock,
its days, a run), so a hundred small writes applied together cost little more than one, and
each job still ends with its own exact counts.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session, undefer

from audiences import queue
from audiences.errors import RateLimited
from audiences.kit.clock import utcnow
from audiences.membership.cache import BitmapCache
from audiences.schemas.memberships import MemberWrite
from audiences.services import audiences, memberships, static_members
from audiences.services.callers import Caller
from audiences.services.static_members import WRITE_HANDLER, Write
from audiences.store.tables import AudienceRow, JobRow, MemberWriteRow

BATCH_WRITES = 200
"""Most writes one job applies together (its own and those queued behind it)."""
BATCH_IDS = 200_000
"""Most ids one job applies together; a single write of 10,000 always fits."""
RETRY_AFTER_SECONDS = 1
"""What a 429 for a full backlog asks a client to wait: about the time a batch takes."""


@dataclass(frozen=True)
class Ids:
    """A write's ids: those it adds (for a ``replace``, the new members) and those it removes."""

    adds: list[str]
    removes: list[str]

    def __len__(self) -> int:
        return len(self.adds) + len(self.removes)


@dataclass(frozen=True)
class Backlog:
    """How many writes may wait to be applied, per audience and per workspace."""

    per_audience: int
    per_workspace: int


def encode(ids: Ids) -> bytes:
    """The stored form of a write's ids: their JSON, compressed (ids repeat prefixes a lot)."""
    return zlib.compress(orjson.dumps([ids.adds, ids.removes]), 1)


def decode(body: bytes) -> Ids:
    """The ids :func:`encode` stored."""
    adds, removes = orjson.loads(zlib.decompress(body))
    return Ids(adds, removes)


def ids_of(write: MemberWrite) -> tuple[str, Ids]:
    """A write's action and ids: ``ids`` under one ``action``, or ``changes`` (each id added
    or removed; the last action for an id wins) as a ``mixed`` write.

    >>> from audiences.schemas.memberships import MemberChange
    >>> ids_of(MemberWrite(changes=[MemberChange(id="a", action="add"),
    ...     MemberChange(id="b", action="remove"), MemberChange(id="a", action="remove")]))
    ('mixed', Ids(adds=[], removes=['a', 'b']))
    """
    if write.changes is None:
        action, listed = str(write.action), list(write.ids or [])
        return action, Ids([], listed) if action == "remove" else Ids(listed, [])
    last = {change.id: change.action for change in write.changes}
    adds = [identifier for identifier, change in last.items() if change == "add"]
    removes = [identifier for identifier, change in last.items() if change == "remove"]
    return "mixed", Ids(adds, removes)


def accept(
    session: Session,
    *,
    caller: Caller,
    audience_id: str,
    write: MemberWrite,
    backlog: Backlog,
    max_attempts: int,
) -> JobRow:
    """Number a JSON write and queue its job (see ``static_members.accept``), unless the
    audience or the workspace already has ``backlog`` writes waiting: then 429
    ``write_backlog_full``, so a client that writes faster than writes are applied slows down
    instead of growing a queue that takes minutes to drain."""
    action, ids = ids_of(write)
    audience = audiences.get(session, caller=caller, audience_id=audience_id, labels=False)
    static_members.require_pushed(audience)
    # Counted under the audience's lock (which accept takes anyway), so concurrent writes to
    # one audience cannot all see room for one more on PostgreSQL.
    memberships.locked(session, audience)
    _check_backlog(session, audience, backlog)
    return static_members.accept(
        session,
        caller=caller,
        audience=audience,
        action=action,
        handler=WRITE_HANDLER,
        payload={"size": len(ids)},
        max_attempts=max_attempts,
        body=encode(ids),
    )


_WAITING = select(
    func.count().filter(JobRow.subject_id == bindparam("audience_id")), func.count()
).where(
    JobRow.workspace_id == bindparam("workspace_id"),
    JobRow.state.in_(static_members.LIVE_JOB_STATES),
    JobRow.handler.in_(static_members.WRITE_HANDLERS),
)
"""The writes and imports waiting in an audience and in its workspace: built once (a statement
built per call cost more than running it), read from ``ix_jobs_workspace_id_state_handler``."""


def _check_backlog(session: Session, audience: AudienceRow, backlog: Backlog) -> None:
    """429 ``write_backlog_full`` when the audience or its workspace has ``backlog`` writes
    and imports waiting (queued or running), counted in one statement. Under the audience's
    lock the audience's limit is exact; the workspace's may be passed by as many writes as are
    accepted at the same moment for its other audiences (a lock per workspace would serialise
    them all)."""
    params = {"audience_id": audience.id, "workspace_id": audience.workspace_id}
    waiting = session.execute(_WAITING, params).one()
    for scope, limit, count in (
        ("audience", backlog.per_audience, waiting[0]),
        ("workspace", backlog.per_workspace, waiting[1]),
    ):
        if count >= limit:
            raise RateLimited(
                f"this {scope} has {limit} membership writes waiting to be applied; "
                f"retry in {RETRY_AFTER_SECONDS} s",
                code="write_backlog_full",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                extra={"limit": limit, "scope": scope},
            )


@dataclass(frozen=True)
class Pending:
    """A write waiting to be applied, with its ids."""

    seq: int
    job_id: str
    action: str
    ids: Ids


def take(
    session: Session,
    *,
    audience_id: str,
    seq: int,
    job_id: str,
    owner: str,
    lease_seconds: float,
) -> list[Pending]:
    """Write ``seq`` (the job's own, if still pending) and the JSON writes of the same audience
    queued and due behind it, within :data:`BATCH_WRITES` and :data:`BATCH_IDS`, in ``seq``
    order: their jobs are leased to ``owner`` first (``queue.take_queued``), so no other worker
    resolves their ids too. A job waiting out a retry's backoff waits."""
    others = (
        select(MemberWriteRow.seq, MemberWriteRow.job_id, JobRow.payload)
        .join(JobRow, JobRow.id == MemberWriteRow.job_id)
        .where(
            MemberWriteRow.audience_id == audience_id,
            MemberWriteRow.seq != seq,
            MemberWriteRow.state == "pending",
            MemberWriteRow.body.is_not(None),
            JobRow.state == queue.QUEUED,
            JobRow.run_after <= utcnow(),
        )
        .order_by(MemberWriteRow.seq)
        .limit(BATCH_WRITES - 1)
    )
    wanted: dict[str, int] = {}
    total = 0
    for row_seq, row_job, payload in session.execute(others):
        size = int((payload or {}).get("size", 0))
        if total + size <= BATCH_IDS:
            wanted[row_job] = row_seq
            total += size
    taken = set(
        queue.take_queued(session, job_ids=wanted, owner=owner, lease_seconds=lease_seconds)
    )
    seqs = [seq, *(wanted[job] for job in taken)]
    rows = session.scalars(
        select(MemberWriteRow)
        .where(MemberWriteRow.audience_id == audience_id, MemberWriteRow.seq.in_(seqs))
        .order_by(MemberWriteRow.seq)
        .options(undefer(MemberWriteRow.body))
    )
    found = [
        Pending(row.seq, row.job_id, row.action, decode(row.body))
        for row in rows
        if row.body is not None and row.state == "pending"
    ]
    # A write applied meanwhile (by a stale attempt) goes back to its job, which finds it so.
    lost = taken - {write.job_id for write in found}
    queue.release_taken(session, job_ids=lost, owner=owner)
    return found


def apply(
    session: Session,
    *,
    audience: AudienceRow,
    job_id: str,
    owner: str,
    writes: Sequence[Write],
    cache: BitmapCache | None = None,
) -> dict[str, object] | None:
    """Apply the writes of ``writes`` whose jobs ``owner`` still leases (the job's own among
    them), as one change; finish the others with their own results in the same transaction;
    the job's own result (None when it is not applied here). A job whose lease was lost
    meanwhile is left to whoever holds it now: its write stays pending."""
    # The audience first, then the jobs: every writer of an audience locks in this order.
    memberships.locked(session, audience)
    held = queue.held_by(session, job_ids={write.job_id for write in writes}, owner=owner)
    mine = [write for write in writes if write.job_id in held]
    results = static_members.apply_many(
        session, audience=audience, writes=mine, trigger="members", cache=cache
    )
    own: dict[str, object] | None = None
    finished: dict[str, tuple[object, dict[str, int], int]] = {}
    for write in mine:
        result = results[write.seq]
        if write.job_id == job_id:
            own = result
            job = session.get(JobRow, job_id)
            if job is not None:
                job.result = result
            continue
        counts = {name: int(result.get(name, 0)) for name in static_members.RESULT_COUNTS}
        counts["ids"] = write.ids
        finished[write.job_id] = ({**result, "applied_by": job_id}, counts, write.ids)
    queue.finish_taken(session, results=finished, owner=owner)
    return own
