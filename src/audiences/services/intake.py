"""The write intake: JSON membership writes answered from a local log, committed in groups.

On SQLite (the embedded set-up: one server process owns the data directory) a plain JSON write
to a static audience this process has written to before is accepted by appending one record
(:mod:`audiences.services.intake_log`) to the current segment under
``<data_dir>/writes/intake/`` with one ``os.write`` on a descriptor kept open, and answered 202
at once; the request waits for no transaction, no thread and no file of its own. A flusher
thread takes the pending records in order and does for each what
:func:`static_members.accept_ids` does (lock, next ``seq``, job row, write row) with the
record's job id and acceptance time, all in ONE transaction. So ``seq`` order is acceptance
order, and the job the client was told about appears with exactly the body it was shown.

The body is never copied: the job names where its record lies in the log
(:class:`~audiences.services.intake_log.BodyLocation`) and its handler reads it from there.
So a segment is kept until every job it holds has ended; the flusher checks about once a
second and drops the segments that are done.

Read-your-writes is a barrier: whatever reads or changes jobs, and every other acceptance of a
write to a static audience, first waits until everything accepted before it is committed
(:meth:`Intake.barrier`).

Durability is that of SQLite's WAL with ``synchronous=NORMAL``: a record survives the process
being killed (it is in the page cache), and :meth:`Intake.open` replays, before the workers
start, every complete record whose job does not exist yet; a torn tail is dropped. Neither
survives a power loss, as nothing is fsynced. A second process opening the same data directory
finds the intake locked (``flock``) and takes the ordinary path instead.
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import threading
import time
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from audiences.errors import ServiceUnavailable
from audiences.kit.clock import utcnow
from audiences.kit.ids import new_id
from audiences.schemas.jobs import Job
from audiences.services import memberships, static_members
from audiences.services.callers import Caller
from audiences.services.intake_log import (
    BodyLocation,
    Record,
    directory,
    encode,
    read,
    segment_name,
    segments,
)
from audiences.services.read_cache import ExpiringMap
from audiences.store.tables import AudienceRow, JobRow

log = logging.getLogger("audiences.intake")

BARRIER_SECONDS = 30.0
"""How long a barrier waits for the flusher before answering 503 ``intake_behind``."""
REPLAY_BATCH = 500
"""Records replayed per transaction at start."""
MAX_BACKOFF = 5.0
GATHER_SECONDS = 0.1
"""How long the flusher lets writes gather after the first before it commits them together
(unless a barrier is waiting, which has them committed at once): one commit per group
instead of one per write, which leaves the request path the CPU and the GIL it would
otherwise compete for (0.1 s measured faster than 0.02 s over HTTP: bench/README.md)."""
DROP_SECONDS = 1.0
"""How often the flusher looks for segments whose jobs have all ended, to drop them."""
LOOKUP_BATCH = 500
"""Job ids per query when looking for the live ones."""
LOOKUP_LIMIT = 2_000
"""Job ids looked up per check, oldest segments first: a backlog of queued writes (workers
behind) costs each check a bounded amount, and the oldest segments are the first done."""


class IntakeClosed(Exception):
    """The intake no longer accepts records (stopping, or its log cannot be written)."""


class Intake:
    """The process's write intake: the log, the pending records, the flusher thread."""

    def __init__(
        self,
        *,
        data_dir: Path,
        session_factory: sessionmaker[Session],
        targets: ExpiringMap[str],
        lock_fd: int,
        read_factory: sessionmaker[Session] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.directory = directory(self.data_dir)
        self._factory = session_factory
        self._reads = read_factory or session_factory
        self._targets = targets
        self._lock_fd = lock_fd
        self._lock = threading.Lock()
        self._pending: list[Record] = []
        self._accepted = 0
        self._flushed = 0
        self._done = threading.Condition()
        self._wake = threading.Event()
        self._hurry = threading.Event()
        self._stopping = False
        self._fd: int | None = None
        self._segment = 0
        self._size = 0
        self._held: dict[int, list[str]] = {}  # closed segments: the jobs of their records
        self._dropped_at = 0.0
        self._thread = threading.Thread(target=self._run, name="audiences-intake", daemon=True)

    @classmethod
    def open(
        cls,
        *,
        data_dir: Path,
        session_factory: sessionmaker[Session],
        targets: ExpiringMap[str],
        read_factory: sessionmaker[Session] | None = None,
    ) -> Intake | None:
        """The intake of ``data_dir``, recovered and running; None if another process holds it.
        ``read_factory`` (read-only sessions, which on SQLite take no write lock) serves the
        flusher's look-ups of its jobs; by default ``session_factory`` does."""
        folder = directory(Path(data_dir))
        folder.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(folder / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            log.warning("the write intake in %s is held by another process; not used", folder)
            return None
        intake = cls(
            data_dir=data_dir,
            session_factory=session_factory,
            targets=targets,
            lock_fd=lock_fd,
            read_factory=read_factory,
        )
        try:
            intake.recover()
        except BaseException:
            os.close(lock_fd)
            raise
        intake._segment = max((number for number, _ in segments(folder)), default=0) + 1
        intake._fd = intake._open_segment(intake._segment)
        intake._thread.start()
        return intake

    # -- acceptance (on the event loop) -------------------------------------------------------

    def takes(self, workspace_id: str, audience_id: str) -> bool:
        """Whether a write to ``audience_id`` may be accepted here: it is known to be a static
        audience of ``workspace_id`` with a membership row (:meth:`learn`)."""
        return self._targets.get(audience_id) == workspace_id and not self._stopping

    def generation(self) -> int:
        """Read before looking an audience up; hand it back to :meth:`learn`."""
        return self._targets.generation

    def learn(self, workspace_id: str, audience_id: str, generation: int) -> None:
        """Remember that ``audience_id`` took a write the ordinary way (a static audience of
        ``workspace_id`` with a membership row), unless the audience changed since."""
        self._targets.put(audience_id, workspace_id, generation)

    def accept(
        self, *, caller: Caller, audience_id: str, action: str, body: bytes, max_attempts: int
    ) -> Job:
        """Log a checked write and answer with its job, as :func:`accept_ids` would;
        :class:`IntakeClosed` if it cannot be logged (take the ordinary path then)."""
        now = utcnow()
        record = Record(
            job_id=new_id(),
            workspace_id=caller.workspace_id,
            audience_id=audience_id,
            action=action,
            actor=caller.actor,
            created_at=now,
            max_attempts=max_attempts,
            body=body,
        )
        data = encode(record)
        with self._lock:
            if self._stopping or self._fd is None:
                raise IntakeClosed("the write intake is stopping")
            self._append(self._fd, data)
            location = BodyLocation(self._segment, self._size, len(data))
            self._size += len(data)
            self._pending.append(dataclasses.replace(record, body=b"", location=location))
            self._accepted += 1
        self._wake.set()
        return static_members.queued_job(
            job_id=record.job_id,
            audience_id=audience_id,
            action=action,
            actor=record.actor,
            now=now,
            max_attempts=max_attempts,
        )

    def _append(self, fd: int, data: bytes) -> None:
        """Write a whole record or none at the segment's end (``self._size``): a failed or
        short write is cut off again. If even that fails, the intake stops accepting (later
        records would lie after bytes no reader gets past); what it accepted is still
        committed, and writes take the ordinary path."""
        try:
            written = os.write(fd, data)
            while written < len(data):  # only on a full disk or a signal
                written += os.write(fd, memoryview(data)[written:])
        except OSError as error:
            try:
                os.ftruncate(fd, self._size)
            except OSError:
                self._stopping = True
                log.exception("the write intake's log cannot be repaired; it stops accepting")
            raise IntakeClosed(f"the write intake cannot be written: {error}") from error

    # -- the barrier ---------------------------------------------------------------------------

    @property
    def accepted(self) -> int:
        """How many writes this intake has accepted since it opened."""
        return self._accepted

    def behind(self) -> bool:
        """Whether some accepted record is not committed yet."""
        return self._flushed < self._accepted

    def barrier(self, timeout: float = BARRIER_SECONDS) -> None:
        """Wait until every record accepted before this call is committed (blocking: call it
        from a thread, never holding a transaction); 503 ``intake_behind`` after ``timeout``."""
        target = self._accepted
        if self._flushed >= target:
            return
        self._hurry.set()
        with self._done:
            if not self._done.wait_for(lambda: self._flushed >= target, timeout):
                raise ServiceUnavailable(
                    "accepted membership writes are not committed yet; retry shortly",
                    code="intake_behind",
                )

    # -- the flusher ---------------------------------------------------------------------------

    def close(self, timeout: float = 30.0) -> None:
        """Stop accepting, commit what is pending, stop the flusher. What it could not commit
        in time stays in the log and is replayed at the next start. Idempotent."""
        with self._lock:
            if self._lock_fd < 0:
                return
            self._stopping = True
        self._wake.set()
        self._hurry.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        with self._lock:
            if self._fd is not None and not self._pending:
                os.close(self._fd)
                self._fd = None
                if not self._thread.is_alive():
                    (self.directory / segment_name(self._segment)).unlink(missing_ok=True)
                    self._drop_finished()
            os.close(self._lock_fd)
            self._lock_fd = -1

    def _run(self) -> None:
        batch: list[Record] = []
        failures = 0
        while True:
            if not batch and not self._stopping:
                self._wake.wait(1.0)  # the timeout only guards against a lost wake-up
                self._wake.clear()
                if not self._stopping:
                    self._hurry.wait(GATHER_SECONDS)
                self._hurry.clear()
            batch += self._take()
            if not batch:
                if self._stopping:
                    return
                self._drop_finished(every=DROP_SECONDS)
                continue
            try:
                self._commit(batch, skip_existing=failures > 0)
            except Exception:
                failures += 1
                delay = min(0.05 * 2 ** min(failures, 10), MAX_BACKOFF)
                log.exception("the write intake could not commit %d writes", len(batch))
                time.sleep(delay)
                continue
            failures = 0
            self._hold(batch)
            with self._done:
                self._flushed += len(batch)
                self._done.notify_all()
            batch = []
            self._drop_finished(every=DROP_SECONDS)

    def _take(self) -> list[Record]:
        """The pending records, oldest first; the segment holding them is closed and a new one
        started, so a committed batch's segments can be dropped whole."""
        if not self._pending:
            return []
        following = self._open_segment(self._segment + 1)
        with self._lock:
            records, self._pending = self._pending, []
            old, self._fd = self._fd, following
            self._segment += 1
            self._size = 0
        if old is not None:
            os.close(old)
        return records

    def _open_segment(self, number: int) -> int:
        path = self.directory / segment_name(number)
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def _hold(self, records: list[Record]) -> None:
        """Keep the segments of committed ``records`` until their jobs have ended."""
        for record in records:
            assert record.location is not None, "a logged record knows where it lies"
            self._held.setdefault(record.location.segment, []).append(record.job_id)

    def _drop_finished(self, every: float = 0.0) -> None:
        """Drop the held segments none of whose jobs is queued or running any more (applied,
        failed or cancelled: no handler will read them); at most once per ``every`` seconds,
        looking at the oldest segments' first :data:`LOOKUP_LIMIT` jobs. A failure is logged
        and tried again later: a segment kept too long costs only disk."""
        now = time.monotonic()
        if not self._held or now - self._dropped_at < every:
            return
        self._dropped_at = now
        looked: dict[int, list[str]] = {}
        count = 0
        for number in sorted(self._held):
            if count >= LOOKUP_LIMIT:
                break
            looked[number] = self._held[number]
            count += len(looked[number])
        try:
            live = self._live_jobs([job_id for held in looked.values() for job_id in held])
        except Exception:
            log.exception("the write intake could not look up its jobs")
            return
        for number, held in looked.items():
            if live.isdisjoint(held):
                (self.directory / segment_name(number)).unlink(missing_ok=True)
                del self._held[number]

    def _live_jobs(self, job_ids: list[str]) -> set[str]:
        live: set[str] = set()
        with self._reads() as session:
            for start in range(0, len(job_ids), LOOKUP_BATCH):
                live.update(
                    session.scalars(
                        select(JobRow.id).where(
                            JobRow.id.in_(job_ids[start : start + LOOKUP_BATCH]),
                            JobRow.state.in_(static_members.LIVE_JOB_STATES),
                        )
                    )
                )
        return live

    def _commit(self, records: list[Record], *, skip_existing: bool) -> int:
        """Number and queue ``records`` in one transaction; how many were new. With
        ``skip_existing``, a record whose job exists already is left alone (a replay)."""
        with self._factory.begin() as session:
            existing = _existing(session, records) if skip_existing else set()
            fresh = [record for record in records if record.job_id not in existing]
            numbered = static_members.insert_writes(
                session.connection(), [_new_write(record) for record in fresh]
            )
            for record, done in zip(fresh, numbered, strict=True):
                if not done:
                    self._number(session, record)
        return len(fresh)

    def _number(self, session: Session, record: Record) -> None:
        """A record its group could not number: its audience has no membership row yet (made
        now, then the write numbered), or is gone or not static (its job is created failed)."""
        audience = session.scalar(
            select(AudienceRow).where(
                AudienceRow.id == record.audience_id,
                AudienceRow.workspace_id == record.workspace_id,
            )
        )
        if audience is None:
            code, message = "audience_not_found", "the audience was deleted before the write"
        elif audience.kind != "static":
            code, message = "audience_not_static", f"the audience is {audience.kind} now"
        else:
            memberships.locked(session, audience)
            if static_members.insert_write(session.connection(), _new_write(record)) is None:
                raise RuntimeError(f"audience {record.audience_id} cannot be written to")
            return
        static_members.failed_write(session, _new_write(record), code=code, message=message)

    # -- recovery ------------------------------------------------------------------------------

    def recover(self) -> int:
        """Replay the records left in the log by a process that stopped before committing
        them; how many jobs that made. Idempotent: a record whose job exists is skipped. The
        segments are held as the flusher holds them, and dropped once their jobs have ended."""
        made = 0
        for _, path in segments(self.directory):
            records, torn = read(path)
            if torn:
                log.warning("ignored the torn tail of %s", path.name)
            for start in range(0, len(records), REPLAY_BATCH):
                made += self._commit(records[start : start + REPLAY_BATCH], skip_existing=True)
            if records:
                self._hold(records)
            else:
                path.unlink(missing_ok=True)
        if made:
            log.warning("replayed %d accepted membership writes from the intake log", made)
        return made


def _new_write(record: Record) -> static_members.NewWrite:
    return static_members.NewWrite(
        job_id=record.job_id,
        workspace_id=record.workspace_id,
        audience_id=record.audience_id,
        action=record.action,
        actor=record.actor,
        now=record.created_at,
        max_attempts=record.max_attempts,
        body_log=record.location.as_payload() if record.location is not None else None,
    )


def _existing(session: Session, records: list[Record]) -> set[str]:
    ids = [record.job_id for record in records]
    return set(session.scalars(select(JobRow.id).where(JobRow.id.in_(ids))))
