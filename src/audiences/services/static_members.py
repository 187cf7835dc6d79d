"""Static audiences' members: writes accepted in order and applied at least once, days for ttl.

A write (a JSON call or a file import) is numbered (``seq``) when it is accepted, under the
audience's membership lock, and becomes a job. Jobs may run late, twice or out of order, so
applying one is idempotent (its :class:`MemberWriteRow` says whether it was) and ordered by
``seq``, not by when it runs: a write applied after later ones leaves the ids those touched to
them, and is ``replaced`` entirely when a later replace was applied. The last action for an id
wins, as accepted.

Members are kept by the day they joined (:mod:`audiences.services.member_days`, which also
expires them); the current set is the audience's :class:`MembershipRow`, changed in the same
transaction as the days.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pyroaring import AbstractBitMap, BitMap
from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.orm import Session, undefer

from audiences import queue
from audiences.errors import Conflict
from audiences.kit.clock import utcnow
from audiences.membership.bitmaps import deserialize, serialize
from audiences.membership.cache import BitmapCache
from audiences.schemas.jobs import JobKind
from audiences.services import lifecycle, member_days, memberships, run_history, syncs
from audiences.services.callers import Caller
from audiences.store.tables import (
    AudienceRow,
    JobRow,
    MembershipRow,
    MemberWriteRow,
)

ACTIONS = ("add", "remove", "replace", "mixed")
"""What a write does: add its ids, remove them, make them the members, or each id its own
action (``mixed``: some added, some removed)."""
WRITE_HANDLER = "membership.write"
IMPORT_HANDLER = "import.rows"
EXPIRE_HANDLER = "membership.expire"
WRITE_HANDLERS = (WRITE_HANDLER, IMPORT_HANDLER)
IN_PROGRESS, APPLIED, REPLACED = "in_progress", "applied", "replaced"
DROPPED = "dropped"
"""A write accepted while the audience took writes by id, found when it was to be applied
that the audience no longer does (its source switched from ``push`` to a file or SQL source):
it is not applied, so the members stay those the source gives."""
DROPPED_REASON = (
    "the audience's source is no longer push: its members come from its file or SQL source, "
    "so this write was not applied"
)
LIVE_JOB_STATES = ("queued", "running")
RESULT_COUNTS = ("added", "removed", "unchanged", "superseded")
"""The counts of a write's result that its job's ``counts`` repeat."""


@dataclass(frozen=True)
class Outcome:
    """What applying one write did: its indexing state and exact counts."""

    indexing_state: str
    action: str
    added: int = 0
    removed: int = 0
    unchanged: int = 0
    superseded: int = 0
    size: int = 0

    def as_result(self) -> dict[str, Any]:
        """The job's ``result``."""
        return {
            "indexing_state": self.indexing_state,
            "action": self.action,
            "added": self.added,
            "removed": self.removed,
            "unchanged": self.unchanged,
            "superseded": self.superseded,
            "size": self.size,
        }


def require_pushed(audience: AudienceRow) -> None:
    """Refuse membership writes to an audience whose members are not the client's to write:
    one computed from a rule, or an external one synced from a file or SQL source. Static
    audiences and external ones with a ``push`` source take them, the same way."""
    if syncs.pushed(audience):
        return
    what = f"a {audience.kind} audience"
    if audience.kind == "external":
        what = "an external audience synced from its source"
    raise Conflict(
        f"the members of {what} are not written by id; only static audiences and external "
        "ones with a push source take writes",
        code="audience_not_static",
    )


def accept(
    session: Session,
    *,
    caller: Caller,
    audience: AudienceRow,
    action: str,
    handler: str,
    payload: dict[str, Any],
    max_attempts: int,
    dedupe_key: str | None = None,
    body: bytes | None = None,
) -> JobRow:
    """Number a write and queue the job that applies it; the job's ``result`` says
    ``in_progress`` until it is applied. With ``dedupe_key``, the job already queued for it.
    ``body`` is a JSON write's ids, kept on its write row until applied (an import's file
    stays on disk instead). An inactive or archived audience takes no writes (409)."""
    require_pushed(audience)
    lifecycle.require(audience, lifecycle.Action.WRITE)
    if action not in ACTIONS:
        raise ValueError(f"unknown membership action {action!r}")
    memberships.locked(session, audience)
    seq = (session.scalar(_LAST_SEQ, {"audience_id": audience.id}) or 0) + 1
    job = queue.enqueue(
        session,
        workspace_id=audience.workspace_id,
        kind=JobKind.IMPORT,
        handler=handler,
        payload={**payload, "audience_id": audience.id, "action": action, "seq": seq},
        subject_id=audience.id,
        dedupe_key=dedupe_key,
        max_attempts=max_attempts,
        created_by=caller.actor,
        result={"indexing_state": IN_PROGRESS, "action": action},
        flush=False,  # flushed with the write row below: one flush, two INSERTs
    )
    if job.payload.get("seq") != seq:
        return job
    session.add(
        MemberWriteRow(
            audience_id=audience.id,
            seq=seq,
            workspace_id=audience.workspace_id,
            job_id=job.id,
            action=action,
            state="pending",
            body=body,
        )
    )
    session.flush()
    return job


_LAST_SEQ = select(func.max(MemberWriteRow.seq)).where(
    MemberWriteRow.audience_id == bindparam("audience_id")
)
"""The last number given to a write of an audience (built once: see ``member_writes``)."""


@dataclass(frozen=True)
class Write:
    """One numbered write to apply: the profiles it adds (for a ``replace``, the new members)
    and those it removes (a ``mixed`` write has both, disjoint)."""

    seq: int
    job_id: str
    action: str
    adds: AbstractBitMap
    removes: AbstractBitMap = field(default_factory=BitMap)
    ids: int = 0
    """How many ids the write named (its job's ``processed``)."""

    @property
    def touched(self) -> BitMap:
        """Every profile the write decides."""
        return BitMap(self.adds) | BitMap(self.removes)


def apply(
    session: Session,
    *,
    audience: AudienceRow,
    write: Write,
    trigger: str,
    extra: dict[str, Any] | None = None,
    cache: BitmapCache | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Apply one write exactly once (see :func:`apply_many`); its job's result."""
    results = apply_many(
        session, audience=audience, writes=[write], trigger=trigger, cache=cache, now=now
    )
    result = {**results[write.seq], **(extra or {})}
    job = session.get(JobRow, write.job_id)
    if job is not None:
        job.result = result
    return result


def apply_many(
    session: Session,
    *,
    audience: AudienceRow,
    writes: Sequence[Write],
    trigger: str,
    cache: BitmapCache | None = None,
    now: datetime | None = None,
) -> dict[int, dict[str, Any]]:
    """Apply ``writes`` (each at most once, in ``seq`` order) as one change of the audience;
    each write's own result, by ``seq``.

    Holds the audience's membership lock, so concurrent attempts queue up and the second finds
    its write applied: a repeat returns the result of the first application. A write is applied
    as if in ``seq`` order among every write of the audience: ids a later write applied before
    it (out of order) already decided are left to that one (``superseded``), and a write
    older than an applied ``replace`` does nothing (``replaced``). The change is stored once
    (a delta when small) and recorded as one run, whatever the number of writes.
    """
    moment = now or utcnow()
    syncs.lock_audience(session, audience.id)  # a change of source waits, or went first
    current = session.get(AudienceRow, audience.id, populate_existing=True)
    state = memberships.locked(session, audience)
    if current is None or not syncs.pushed(current):
        return _dropped(session, state, audience.id, writes, cache)
    before = BitMap(memberships.members_of(session, state, cache))
    days = member_days.load(session, audience, before, moment)
    members = BitMap(before)
    results: dict[int, dict[str, Any]] = {}
    decided: list[int] = []  # the writes this call applies or finds replaced
    applied: list[Write] = []
    ordered = sorted(writes, key=lambda w: w.seq)
    rows = _write_rows(session, audience.id, [write.seq for write in ordered])
    # Writes applied before this call with a higher seq than some write here (out of order);
    # the writes this call applies never count, being applied in seq order.
    later_applied = _applied_after(session, audience.id, ordered[0].seq) if ordered else []
    for write in ordered:
        row = rows.get(write.seq)
        if row is None or row.state != "pending":
            results[write.seq] = _earlier_result(session, write, size=len(members))
            continue
        later = [other for other in later_applied if other.seq > write.seq]
        if any(other.action == "replace" for other in later):
            row.state, row.body = REPLACED, None
            outcome = Outcome(REPLACED, write.action, superseded=len(write.touched))
        else:
            mask = BitMap()
            for other in later:
                mask |= deserialize(other.pids or b"")
            outcome, members = _apply_one(days, write, members, mask, member_days.day_of(moment))
            row.state, row.applied_at, row.body = APPLIED, moment, None
            row.pids = serialize(write.touched)  # masks earlier writes still pending
            applied.append(write)
        results[write.seq] = outcome.as_result()
        decided.append(write.seq)
        if write.action == "replace" and outcome.indexing_state == APPLIED:
            session.flush()
            _mark_replaced(session, audience.id, write.seq, results)
    session.flush()  # the rows' changes as a few executemany UPDATEs
    for seq in decided:
        results[seq]["size"] = len(members)
    if applied:
        member_days.save(session, audience, days)
        change = memberships.replace(
            session, audience=audience, members=members, cache=cache, fold=False
        )
        _release_masks(session, audience.id)
        run_history.record_change(
            session,
            audience=audience,
            state=state,
            members=members,
            change=change,
            trigger=trigger,
        )
    return results


def _dropped(
    session: Session,
    state: MembershipRow,
    audience_id: str,
    writes: Sequence[Write],
    cache: BitmapCache | None,
) -> dict[int, dict[str, Any]]:
    """Writes to an audience that no longer takes writes by id: each pending one ``dropped``
    with the reason, the members untouched."""
    size = len(memberships.members_of(session, state, cache))
    rows = _write_rows(session, audience_id, [write.seq for write in writes])
    results: dict[int, dict[str, Any]] = {}
    for write in writes:
        row = rows.get(write.seq)
        if row is None or row.state != "pending":
            results[write.seq] = _earlier_result(session, write, size=size)
            continue
        row.state, row.body = DROPPED, None
        results[write.seq] = {
            **Outcome(DROPPED, write.action, size=size).as_result(),
            "reason": DROPPED_REASON,
        }
    session.flush()
    return results


def _apply_one(
    days: dict[int, BitMap], write: Write, members: BitMap, mask: BitMap, today: int
) -> tuple[Outcome, BitMap]:
    """One write's effect on the day bitmaps (in place) and on ``members``: its outcome and the
    members after it."""
    adds, removes = BitMap(write.adds) - mask, BitMap(write.removes) - mask
    superseded = len(write.touched) - len(adds) - len(removes)
    if write.action == "replace":
        kept = members & mask
        for day in days:
            days[day] &= kept
        days[today] = days.get(today, BitMap()) | adds
        after = adds | kept
        added = len(after - members)
        outcome = Outcome(
            APPLIED,
            write.action,
            added=added,
            removed=len(members - after),
            unchanged=len(after) - added,
            superseded=superseded,
        )
        return outcome, after
    decided = adds | removes
    for day in days:
        days[day] -= decided
    days[today] = days.get(today, BitMap()) | adds
    added, removed = len(adds - members), len(removes & members)
    outcome = Outcome(
        APPLIED,
        write.action,
        added=added,
        removed=removed,
        unchanged=len(decided) - added - removed,
        superseded=superseded,
    )
    return outcome, (members | adds) - removes


def _earlier_result(session: Session, write: Write, *, size: int) -> dict[str, Any]:
    """The result of a write applied (or replaced) before: its job's, as first saved."""
    job = session.get(JobRow, write.job_id)
    if job is not None and isinstance(job.result, dict) and "added" in job.result:
        return dict(job.result)
    return Outcome(REPLACED, write.action, size=size).as_result()


def applied_result(
    session: Session, *, audience_id: str, seq: int, job_id: str
) -> dict[str, Any] | None:
    """The result of write ``seq`` if it was applied (or replaced) already, else None."""
    write = session.get(MemberWriteRow, (audience_id, seq))
    if write is not None and write.state == "pending":
        return None
    job = session.get(JobRow, job_id)
    if job is not None and isinstance(job.result, dict) and "added" in job.result:
        return dict(job.result)
    return None


def _write_rows(session: Session, audience_id: str, seqs: list[int]) -> dict[int, MemberWriteRow]:
    """The write rows of ``seqs``, in one statement."""
    stmt = (
        select(MemberWriteRow)
        .where(MemberWriteRow.audience_id == audience_id, MemberWriteRow.seq.in_(seqs))
        .options(undefer(MemberWriteRow.pids))
    )
    return {row.seq: row for row in session.scalars(stmt)}


def _applied_after(session: Session, audience_id: str, seq: int) -> list[MemberWriteRow]:
    stmt = (
        select(MemberWriteRow)
        .where(
            MemberWriteRow.audience_id == audience_id,
            MemberWriteRow.seq > seq,
            MemberWriteRow.state == APPLIED,
        )
        .options(undefer(MemberWriteRow.pids))
    )
    return list(session.scalars(stmt))


def _mark_replaced(
    session: Session, audience_id: str, seq: int, results: dict[int, dict[str, Any]]
) -> None:
    """Earlier applied writes are replaced now: say so on their jobs (and on the ``results``
    of this batch), and forget them."""
    earlier = session.scalars(
        select(MemberWriteRow).where(
            MemberWriteRow.audience_id == audience_id,
            MemberWriteRow.seq < seq,
            MemberWriteRow.state == APPLIED,
        )
    ).all()
    _set_indexing_state(session, [row.job_id for row in earlier], REPLACED)
    for row in earlier:
        result = results.get(row.seq)
        if result is not None and result["indexing_state"] == APPLIED:
            result["indexing_state"] = REPLACED
        session.delete(row)
    _forget_replaced(session, audience_id, seq)
    session.flush()


def _forget_replaced(session: Session, audience_id: str, below: int) -> None:
    session.execute(
        delete(MemberWriteRow).where(
            MemberWriteRow.audience_id == audience_id,
            MemberWriteRow.seq < below,
            MemberWriteRow.state == REPLACED,
        )
    )


def _set_indexing_state(session: Session, job_ids: Iterable[str], value: str) -> None:
    wanted = list(job_ids)
    if not wanted:
        return
    for job in session.scalars(select(JobRow).where(JobRow.id.in_(wanted))):
        if isinstance(job.result, dict) and job.result.get("indexing_state") == APPLIED:
            job.result = {**job.result, "indexing_state": value}


def _release_masks(session: Session, audience_id: str) -> None:
    """Drop the pids of applied writes that no pending write can be masked by any more.

    A write whose job ended without applying it (failed, cancelled) is pending no more.
    """
    pending = session.execute(
        select(MemberWriteRow.seq)
        .join(JobRow, JobRow.id == MemberWriteRow.job_id)
        .where(
            MemberWriteRow.audience_id == audience_id,
            MemberWriteRow.state == "pending",
            JobRow.state.in_(LIVE_JOB_STATES),
        )
    ).scalars()
    floor = min(pending, default=None)
    stmt = update(MemberWriteRow).where(
        MemberWriteRow.audience_id == audience_id,
        MemberWriteRow.state == APPLIED,
        MemberWriteRow.pids.is_not(None),
    )
    if floor is not None:
        stmt = stmt.where(MemberWriteRow.seq < floor)
    session.execute(stmt.values(pids=None))
