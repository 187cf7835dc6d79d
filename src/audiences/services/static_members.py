"""Static audiences' members: writes accepted in order and applied at least once, days for ttl.

A write (a JSON call or a file import) is numbered (``seq``) when it is accepted, under the
audience's membership lock, and becomes a job. Jobs may run late, twice or out of order, so
applying one is idempotent (its :class:`MemberWriteRow` says whether it was) and ordered by
``seq``, not by when it runs: a write applied after later ones leaves the ids those touched to
them, and is ``replaced`` entirely when a later replace was applied. The last action for an id
wins, as accepted.

Members are kept by the day they joined (``member_days``): a re-add moves a pid to today, and
:func:`expire` drops the days older than the audience's ``ttl_days``. The current set is the
audience's :class:`MembershipRow`, changed in the same transaction as the days.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

import orjson
from pyroaring import AbstractBitMap, BitMap
from sqlalchemy import Connection, Table, bindparam, delete, func, insert, select, update
from sqlalchemy.orm import Session, undefer

from audiences.errors import Conflict
from audiences.jobs import queue
from audiences.kit.clock import utcnow
from audiences.kit.ids import new_id
from audiences.membership.bitmaps import Diff, deserialize, serialize
from audiences.schemas.jobs import Job, JobKind, JobProgress, JobState
from audiences.services import audiences, jobs, lifecycle, memberships
from audiences.services.callers import Caller
from audiences.store.prepared import Prepared
from audiences.store.tables import (
    AudienceRow,
    JobRow,
    MemberDayRow,
    MembershipRow,
    MemberWriteRow,
    RunRow,
)

ACTIONS = ("add", "remove", "replace")
WRITE_HANDLER = "membership.write"
IMPORT_HANDLER = "import.rows"
EXPIRE_HANDLER = "membership.expire"
WRITE_HANDLERS = (WRITE_HANDLER, IMPORT_HANDLER)
IN_PROGRESS, APPLIED, REPLACED = "in_progress", "applied", "replaced"
SNAPSHOTS_KEPT = 20
LIVE_JOB_STATES = ("queued", "running")


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


def require_static(audience: AudienceRow) -> None:
    """Refuse membership writes to an audience computed from a rule or mirrored from elsewhere."""
    if audience.kind != "static":
        raise Conflict(
            f"a {audience.kind} audience's members are not written by id; only static ones are",
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
) -> JobRow:
    """Number a write and queue the job that applies it; the job's ``result`` says
    ``in_progress`` until it is applied. With ``dedupe_key``, the job already queued for it.
    An inactive or archived audience takes no writes (409)."""
    require_static(audience)
    lifecycle.require(audience, lifecycle.Action.WRITE)
    if action not in ACTIONS:
        raise ValueError(f"unknown membership action {action!r}")
    memberships.locked(session, audience)
    last = session.scalar(
        select(func.max(MemberWriteRow.seq)).where(MemberWriteRow.audience_id == audience.id)
    )
    seq = (last or 0) + 1
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
        )
    )
    job.result = {"indexing_state": IN_PROGRESS, "action": action}
    session.flush()
    return job


def accept_ids(
    session: Session,
    *,
    caller: Caller,
    audience_id: str,
    action: str,
    ids: list[str],
    body: bytes,
    data_dir: Path,
    max_attempts: int,
) -> Job:
    """Number a JSON write of ``ids`` and queue its job in four small statements: the hot path
    of ``POST /v1/audiences/{id}/members``, which :func:`accept` takes three times as long.

    ``body`` is the request body those ids were parsed from, checked already. It is kept as a
    file (:func:`body_file`) rather than in the job: a row of 130 KB costs the commit far more
    than the file costs to write. It is written by another thread while the statements run,
    and complete before this returns, so the caller's commit never makes a job without it; a
    transaction that fails or never commits (a process killed in between) leaves at most a
    file that no job names. Returns the job as the API shows it.

    One statement finds the audience in the caller's workspace and locks its membership row
    (a deleted audience is never written to, and PostgreSQL numbers writes in lock order);
    then the next ``seq``; then the job, with its final ``result``; then the
    :class:`MemberWriteRow`. An audience without a membership row yet (never written), or
    missing, or not static, goes through :func:`accept`, which creates the row or raises.
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown membership action {action!r}")
    job_id = new_id()
    name = f"{job_id}.json"
    path = body_file(data_dir, caller.workspace_id, name)
    writing = _BODY_WRITER.submit(_write_file, path, body)  # while the statements run
    try:
        job = insert_write(
            session.connection(),
            NewWrite(
                job_id=job_id,
                workspace_id=caller.workspace_id,
                audience_id=audience_id,
                action=action,
                actor=caller.actor,
                now=utcnow(),
                max_attempts=max_attempts,
            ),
        )
        writing.result()
    except BaseException:
        _abandon(writing, path)
        raise
    if job is not None:
        return job
    path.unlink(missing_ok=True)
    audience = audiences.get(session, caller=caller, audience_id=audience_id)
    accepted = accept(
        session,
        caller=caller,
        audience=audience,
        action=action,
        handler=WRITE_HANDLER,
        payload={"ids": "\n".join(ids)},
        max_attempts=max_attempts,
    )
    return jobs.to_model(accepted)


@dataclass(frozen=True)
class NewWrite:
    """A JSON write to number (see :func:`insert_writes`), its body kept as ``<job_id>.json``
    or, with ``body_log``, where the write intake logged it (:data:`BODY_LOG`)."""

    job_id: str
    workspace_id: str
    audience_id: str
    action: str
    actor: str
    now: datetime
    max_attempts: int
    body_log: dict[str, int] | None = None


def insert_write(connection: Connection, write: NewWrite) -> Job | None:
    """The statements of :func:`accept_ids`: the job as the API shows it, or None when the
    audience is not a static one of the write's workspace with a membership row."""
    if not insert_writes(connection, [write])[0]:
        return None
    return queued_job(
        job_id=write.job_id,
        audience_id=write.audience_id,
        action=write.action,
        actor=write.actor,
        now=write.now,
        max_attempts=write.max_attempts,
    )


def insert_writes(connection: Connection, writes: Sequence[NewWrite]) -> list[bool]:
    """Number ``writes`` in their order and insert their jobs and write rows; for each,
    whether it was (False: its audience is not a static one of its workspace with a
    membership row, and nothing was written for it).

    Each audience is locked and its last ``seq`` read once, then every job is inserted by one
    ``executemany`` and every write row by another: how the write intake commits a group
    (``services/intake.py``), each job with the time it was accepted.
    """
    following: dict[tuple[str, str], int | None] = {}
    jobs: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    numbered: list[bool] = []
    for write in writes:
        target = (write.audience_id, write.workspace_id)
        if target not in following:
            following[target] = _next_seq(connection, *target)
        seq = following[target]
        if seq is None:
            numbered.append(False)
            continue
        following[target] = seq + 1
        numbered.append(True)
        jobs.append(_job_values(write, seq))
        rows.append(
            {
                "audience_id": write.audience_id,
                "seq": seq,
                "workspace_id": write.workspace_id,
                "job_id": write.job_id,
                "action": write.action,
                "state": "pending",
                "created_at": write.now,
            }
        )
    _INSERT_JOB.run_many(connection, jobs)
    _INSERT_WRITE.run_many(connection, rows)
    return numbered


def _next_seq(connection: Connection, audience_id: str, workspace_id: str) -> int | None:
    """Lock the audience's membership row; its next ``seq``, or None if it is not a static
    audience of ``workspace_id`` with a membership row."""
    found = _LOCK_STATIC.first(
        connection, {"audience_id": audience_id, "workspace_id": workspace_id}
    )
    if found is None or found[0] != "static":
        return None
    last = _LAST_SEQ.first(connection, {"audience_id": audience_id})
    return (last[0] if last is not None and last[0] is not None else 0) + 1


def _job_values(write: NewWrite, seq: int) -> dict[str, Any]:
    payload: dict[str, Any] = {"audience_id": write.audience_id, "action": write.action, "seq": seq}
    if write.body_log is not None:
        payload[BODY_LOG] = write.body_log
    else:
        payload[BODY_FILE] = f"{write.job_id}.json"
    return {
        "id": write.job_id,
        "workspace_id": write.workspace_id,
        "kind": JobKind.IMPORT.value,
        "handler": WRITE_HANDLER,
        "payload": payload,
        "subject_id": write.audience_id,
        "state": JobState.QUEUED.value,
        "processed": 0,
        "counts": {},
        "result": {"indexing_state": IN_PROGRESS, "action": write.action},
        "errors": [],
        "error_count": 0,
        "attempts": 0,
        "max_attempts": write.max_attempts,
        "run_after": write.now,
        "cancel_requested": False,
        "created_at": write.now,
        "updated_at": write.now,
        "created_by": write.actor,
    }


def queued_job(
    *, job_id: str, audience_id: str, action: str, actor: str, now: datetime, max_attempts: int
) -> Job:
    """A JSON write's job as the API shows it when it was just accepted (the 202's body)."""
    return Job(
        id=job_id,
        kind=JobKind.IMPORT,
        handler=WRITE_HANDLER,
        subject_id=audience_id,
        state=JobState.QUEUED,
        progress=JobProgress(processed=0, total=None, percent=None),
        counts={},
        result={"indexing_state": IN_PROGRESS, "action": action},
        errors=[],
        error_count=0,
        attempts=0,
        max_attempts=max_attempts,
        cancel_requested=False,
        run_after=now,
        created_at=now,
        updated_at=now,
        created_by=actor,
    )


def failed_write(session: Session, write: NewWrite, *, code: str, message: str) -> None:
    """The job of a write that was answered 202 but cannot be numbered any more (its audience
    was deleted, or is not static): created failed, so the client's job id still resolves and
    says why. Nothing was written to the audience; no ``seq`` is used."""
    session.add(
        JobRow(
            id=write.job_id,
            workspace_id=write.workspace_id,
            kind=JobKind.IMPORT.value,
            handler=WRITE_HANDLER,
            payload={"audience_id": write.audience_id, "action": write.action},
            subject_id=write.audience_id,
            state=JobState.FAILED.value,
            processed=0,
            counts={},
            result={"indexing_state": "cancelled", "action": write.action, "reason": message},
            errors=[{"code": code, "message": message, "attempt": None}],
            error_count=1,
            last_error=message,
            attempts=0,
            max_attempts=write.max_attempts,
            run_after=write.now,
            cancel_requested=False,
            created_at=write.now,
            finished_at=utcnow(),
            updated_at=utcnow(),
            created_by=write.actor,
        )
    )
    session.flush()


_BODY_WRITER = ThreadPoolExecutor(max_workers=4, thread_name_prefix="audiences-write-bodies")
"""Writes the body files of :func:`accept_ids` alongside its statements."""


def _abandon(writing: Future[None], path: Path) -> None:
    """Remove a body file once its write is over, whether or not it succeeded."""
    with contextlib.suppress(Exception):
        writing.result()
    path.unlink(missing_ok=True)


BODY_FILE = "body_file"
"""The payload key naming the file that holds a write's request body (:func:`accept_ids`);
a write without it or :data:`BODY_LOG` carries its ids in the payload, newline-joined."""
BODY_LOG = "body_log"
"""The payload key saying where in the write intake's log a write's request body lies
(``services/intake_log.BodyLocation``)."""


def body_file(data_dir: Path, workspace_id: str, name: str) -> Path:
    """Where the request body of a write accepted by :func:`accept_ids` is kept until it is
    applied: ``<data_dir>/writes/<workspace id>/<job id>.json``."""
    return Path(data_dir) / "writes" / workspace_id / name


BODY_GRACE = timedelta(hours=1)
"""How old a kept body must be before :func:`sweep_bodies` may remove it: far longer than the
moment between writing it and committing its job."""


def sweep_bodies(session: Session, *, data_dir: Path, now: datetime) -> int:
    """Remove the kept request bodies no live job will read; how many went.

    The handler removes a body once its write is applied; this catches the rest: the bodies of
    jobs cancelled while queued, and of requests whose transaction never committed (no job).
    A body younger than :data:`BODY_GRACE` is kept whatever its job, since its transaction may
    still be committing.
    """
    root = Path(data_dir) / "writes"
    if not root.is_dir():
        return 0
    cutoff = (now - BODY_GRACE).timestamp()
    old = {path.stem: path for path in root.glob("*/*.json") if last_written(path) < cutoff}
    removed = 0
    names = sorted(old)
    for start in range(0, len(names), SWEEP_BATCH):
        batch = names[start : start + SWEEP_BATCH]
        live = set(
            session.scalars(
                select(JobRow.id).where(JobRow.id.in_(batch), JobRow.state.in_(LIVE_JOB_STATES))
            )
        )
        for job_id in batch:
            if job_id not in live:
                old[job_id].unlink(missing_ok=True)
                removed += 1
    return removed


SWEEP_BATCH = 500


def last_written(path: Path) -> float:
    """When the file was last written; infinitely recent if it is gone (nothing to sweep)."""
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")


def read_body_ids(path: Path) -> list[str] | None:
    """The ids of a kept request body file; None when it is missing or unreadable."""
    try:
        return body_ids(path.read_bytes())
    except OSError:
        return None


def body_ids(body: bytes | None) -> list[str] | None:
    """The ids of a kept request body; None when it is missing or unreadable (it was checked
    when accepted, so only a lost body reads so)."""
    if body is None:
        return None
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    ids = data.get("ids") if isinstance(data, dict) else None
    return ids if isinstance(ids, list) else None


def _write_file(path: Path, body: bytes) -> None:
    try:
        path.write_bytes(body)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)


# Compiled once and run on the DBAPI cursor: at this size SQLAlchemy's work per execution
# costs more than the database's.
_LOCK_STATIC = Prepared(
    select(AudienceRow.kind)
    .join(MembershipRow, MembershipRow.audience_id == AudienceRow.id)
    .where(
        AudienceRow.id == bindparam("audience_id"),
        AudienceRow.workspace_id == bindparam("workspace_id"),
    )
    .with_for_update(of=MembershipRow)
)
_LAST_SEQ = Prepared(
    select(func.max(MemberWriteRow.seq)).where(
        MemberWriteRow.audience_id == bindparam("audience_id")
    )
)
_JOB_COLUMNS = (
    "id",
    "workspace_id",
    "kind",
    "handler",
    "payload",
    "subject_id",
    "state",
    "processed",
    "counts",
    "result",
    "errors",
    "error_count",
    "attempts",
    "max_attempts",
    "run_after",
    "cancel_requested",
    "created_at",
    "updated_at",
    "created_by",
)
_WRITE_COLUMNS = ("audience_id", "seq", "workspace_id", "job_id", "action", "state", "created_at")
_INSERT_JOB = Prepared(insert(cast(Table, JobRow.__table__)).values(dict.fromkeys(_JOB_COLUMNS)))
_INSERT_WRITE = Prepared(
    insert(cast(Table, MemberWriteRow.__table__)).values(dict.fromkeys(_WRITE_COLUMNS))
)


def apply(
    session: Session,
    *,
    audience: AudienceRow,
    seq: int,
    action: str,
    pids: AbstractBitMap,
    trigger: str,
    job_id: str,
    extra: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Apply write ``seq`` (``pids`` are its profiles) exactly once, in ``seq`` order; the
    job's result (``extra`` merged in), saved on the job in the same transaction.

    Holds the audience's membership lock, so concurrent attempts of one write queue up and the
    second finds it applied: a repeat returns the result of the first application.
    """
    moment = now or utcnow()
    state = memberships.locked(session, audience)
    job = session.get(JobRow, job_id)
    write = session.get(MemberWriteRow, (audience.id, seq), options=[undefer(MemberWriteRow.pids)])
    if write is None or write.state != "pending":
        if job is not None and isinstance(job.result, dict) and "added" in job.result:
            return dict(job.result)
        return _save_result(job, Outcome(REPLACED, action, size=state.size or 0), extra)
    later = _applied_after(session, audience.id, seq)
    if any(row.action == "replace" for row in later):
        write.state = REPLACED
        _forget_replaced(session, audience.id, seq + 1)
        outcome = Outcome(REPLACED, action, superseded=len(pids), size=state.size or 0)
        return _save_result(job, outcome, extra)
    mask = BitMap()
    for row in later:
        mask |= deserialize(row.pids or b"")
    before = BitMap(memberships.members_of(session, state))
    days = _days(session, audience, before, moment)
    effective = BitMap(pids) - mask
    after = _apply_days(days, action, effective, before, mask, _day(moment))
    _save_days(session, audience, days)
    change = memberships.replace(session, audience=audience, members=after)
    write.state, write.applied_at, write.pids = APPLIED, moment, serialize(pids)
    if action == "replace":
        _mark_replaced(session, audience.id, seq)
    _release_masks(session, audience.id)
    record_run(
        session, audience=audience, state=state, members=after, change=change, trigger=trigger
    )
    unchanged = len(effective) - len(change.entered) - len(change.exited)
    if action == "replace":
        unchanged = len(after) - len(change.entered)
    outcome = Outcome(
        APPLIED,
        action,
        added=len(change.entered),
        removed=len(change.exited),
        unchanged=max(unchanged, 0),
        superseded=len(pids) - len(effective),
        size=len(after),
    )
    return _save_result(job, outcome, extra)


def _save_result(
    job: JobRow | None, outcome: Outcome, extra: dict[str, Any] | None
) -> dict[str, Any]:
    result = {**outcome.as_result(), **(extra or {})}
    if job is not None:
        job.result = result
    return result


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


def expire(
    session: Session, *, audience: AudienceRow, trigger: str, now: datetime | None = None
) -> RunRow:
    """Members added longer ago than the audience's ``ttl_days`` leave; recorded as a run.

    Drops whole days. Without a ttl nothing leaves, and the run says so (size unchanged).
    """
    require_static(audience)
    moment = now or utcnow()
    state = memberships.locked(session, audience)
    before = BitMap(memberships.members_of(session, state))
    days = _days(session, audience, before, moment)
    leaving = BitMap()
    if audience.ttl_days is not None:
        cutoff = _day(moment) - audience.ttl_days
        old = [day for day in days if day < cutoff]
        for day in old:
            leaving |= days.pop(day)
        for bitmap in days.values():
            leaving -= bitmap
        if old:
            session.execute(
                delete(MemberDayRow).where(
                    MemberDayRow.audience_id == audience.id, MemberDayRow.day < cutoff
                )
            )
    after = before - leaving
    change = memberships.replace(session, audience=audience, members=after)
    return record_run(
        session, audience=audience, state=state, members=after, change=change, trigger=trigger
    )


def record_run(
    session: Session,
    *,
    audience: AudienceRow,
    state: MembershipRow,
    members: AbstractBitMap,
    change: Diff,
    trigger: str,
) -> RunRow:
    """A succeeded run for a change of a static audience, so its change feed and ``as_of``
    work as for evaluated ones (the last runs keep their member set)."""
    now = utcnow()
    last = session.scalar(select(func.max(RunRow.number)).where(RunRow.audience_id == audience.id))
    run = RunRow(
        workspace_id=audience.workspace_id,
        audience_id=audience.id,
        number=(last or 0) + 1,
        trigger=trigger,
        status="succeeded",
        started_at=now,
        finished_at=now,
        size=len(members),
        entered=len(change.entered),
        exited=len(change.exited),
        members=serialize(members),
        members_kept=True,
    )
    session.add(run)
    session.flush()
    state.status, state.last_error, state.last_run_id = "succeeded", None, run.id
    session.execute(
        update(RunRow)
        .where(RunRow.audience_id == audience.id, RunRow.number <= run.number - SNAPSHOTS_KEPT)
        .where(RunRow.members_kept.is_(True))
        .values(members=None, members_kept=False)
    )
    return run


def _apply_days(
    days: dict[int, BitMap],
    action: str,
    effective: BitMap,
    before: BitMap,
    mask: BitMap,
    today: int,
) -> BitMap:
    """Change the day bitmaps in place for one write; the member set after it."""
    if action == "replace":
        kept = before & mask
        for day in days:
            days[day] &= kept
        days[today] = days.get(today, BitMap()) | effective
        return effective | kept
    for day in days:
        days[day] -= effective
    if action == "add":
        days[today] = days.get(today, BitMap()) | effective
        return before | effective
    return before - effective


def _days(
    session: Session, audience: AudienceRow, members: BitMap, now: datetime
) -> dict[int, BitMap]:
    rows = session.scalars(select(MemberDayRow).where(MemberDayRow.audience_id == audience.id))
    days = {row.day: deserialize(row.bitmap) for row in rows}
    placed = BitMap.union(*days.values()) if days else BitMap()
    # Members that no day holds (written before days were kept) join today.
    unplaced = members - placed
    if unplaced:
        days[_day(now)] = days.get(_day(now), BitMap()) | unplaced
    return days


def _save_days(session: Session, audience: AudienceRow, days: dict[int, BitMap]) -> None:
    stored = {
        row.day: row
        for row in session.scalars(
            select(MemberDayRow).where(MemberDayRow.audience_id == audience.id)
        )
    }
    for day, bitmap in days.items():
        row = stored.get(day)
        if not bitmap:
            if row is not None:
                session.delete(row)
            continue
        blob = serialize(bitmap)
        if row is None:
            session.add(
                MemberDayRow(
                    audience_id=audience.id,
                    day=day,
                    workspace_id=audience.workspace_id,
                    bitmap=blob,
                )
            )
        elif row.bitmap != blob:
            row.bitmap = blob
    session.flush()


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


def _mark_replaced(session: Session, audience_id: str, seq: int) -> None:
    """Earlier applied writes are replaced now: say so on their jobs, and forget them."""
    earlier = session.scalars(
        select(MemberWriteRow).where(
            MemberWriteRow.audience_id == audience_id,
            MemberWriteRow.seq < seq,
            MemberWriteRow.state == APPLIED,
        )
    ).all()
    _set_indexing_state(session, [row.job_id for row in earlier], REPLACED)
    for row in earlier:
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


def _day(moment: datetime) -> int:
    return moment.date().toordinal()
