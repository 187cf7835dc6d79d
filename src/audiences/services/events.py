"""Events: write (idempotent on ``event_id``), a profile's history, the names seen, retention.

A write checks what only the workspace's data can decide (a time too far ahead, property types,
an undeclared property in a strict workspace), declares new properties from their first telling
value, and hands the batch to the profile engine, which refuses a record on its own and creates
the profiles of unknown ids. :func:`event_schema` is what rules over events are checked against.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from operator import itemgetter

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from audiences.config import EVENT_DEDUPE_WINDOW_HOURS
from audiences.engines.base import EventPage, EventPosition, EventRecord, EventResult
from audiences.errors import ErrorDetail, PayloadTooLarge
from audiences.kit.clock import utcnow
from audiences.services import declarations, evaluation, event_properties, memberships
from audiences.services.callers import Caller
from audiences.services.profiles import get as get_profile
from audiences.services.runtime import Runtime
from audiences.store.tables import EventNameRow, WorkspaceRow

EXPIRE_HANDLER = "events.expire"
"""The job that drops a workspace's events past its retention (queued hourly by the scheduler)."""


DEDUPE_WINDOW = timedelta(hours=EVENT_DEDUPE_WINDOW_HOURS)
"""How long an ``event_id`` is remembered when a caller names no window: the setting's default
(callers with settings pass ``event_dedupe_window_hours``)."""


@dataclass(frozen=True)
class Limits:
    """What a write accepts: events per call, how far ahead of now a timestamp may be, and how
    long after its first copy was received a copy of an event is a duplicate."""

    max_events: int
    max_future: timedelta
    dedupe_window: timedelta = DEDUPE_WINDOW


def check_batch_size(count: int, limit: int) -> None:
    """Refuse a call of more than ``limit`` events, before anything is read into records."""
    if count > limit:
        raise PayloadTooLarge(
            f"at most {limit} events per call, got {count}",
            code="too_many_events",
            extra={"limit": limit},
        )


def write(
    session: Session,
    *,
    workspace_id: str,
    runtime: Runtime,
    records: Sequence[EventRecord],
    limits: Limits,
    received_at: datetime | None = None,
    typed: bool = True,
    known_new: frozenset[str] = frozenset(),
    remembered_from: datetime | None = None,
) -> list[EventResult]:
    """Store events; a result per record, in order (see ``ProfileEngine.write_events``, which
    takes the ids in ``known_new`` as not stored without looking them up).

    A record whose ``event_id`` was received within ``limits.dedupe_window`` before
    ``received_at`` is a duplicate (on PostgreSQL, one stored at all); with
    ``remembered_from``, the window is counted back from it when it is earlier (an import
    counts from its acceptance, so a retry hours or days later still finds every id an earlier
    attempt wrote).
    A record timed more than ``limits.max_future`` after ``received_at`` is refused
    (``timestamp_in_future``); undeclared properties are declared from their first telling
    value (text values, ``typed`` False, as CSV cells are) unless the workspace is strict; the
    names of the events written are counted for :func:`names`. This is the one write path of
    events (the API and imports call it), so what must follow a write belongs here.
    """
    check_batch_size(len(records), limits.max_events)
    now = received_at or utcnow()
    refused = _too_late(records, now, limits)
    accepted = (
        [record for n, record in enumerate(records) if n not in refused] if refused else records
    )
    event_properties.admit(
        session,
        workspace_id=workspace_id,
        runtime=runtime,
        properties=map(_PROPERTIES, accepted),
        typed=typed,
    )
    # The streaming audiences events move, locked before the write as profile writes do: of two
    # writers of one profile's events, the later to lock writes later and sees both writes. A
    # profile the write creates is new to every streaming audience, so all are locked then.
    every = evaluation.streaming_audiences(session, workspace_id)
    moved = evaluation.following_events(every)
    fresh = _unknown_ids(runtime, workspace_id, accepted) if len(moved) < len(every) else set()
    memberships.lock_all(session, every if fresh else moved)
    results = runtime.profiles.write_events(
        workspace_id,
        accepted,
        received_at=now,
        known_new=known_new,
        dedupe_since=min(now, remembered_from or now) - limits.dedupe_window,
    )
    if refused:
        written = iter(results)
        results = [refused[n] if n in refused else next(written) for n in range(len(records))]
    changed, seen = _written(records, results)
    created = {pid for pid, external_id in changed.items() if external_id in fresh}
    for audiences, pids in ((moved, set(changed) - created), (every, created)):
        evaluation.on_profiles_written(
            session,
            runtime=runtime,
            workspace_id=workspace_id,
            pids=pids,
            streaming=audiences,
            now=now,
        )
    _count_names(session, workspace_id, seen, now)
    return results


def names(session: Session, *, caller: Caller) -> list[EventNameRow]:
    """The event names the workspace has received, by name."""
    stmt = select(EventNameRow).where(EventNameRow.workspace_id == caller.workspace_id)
    return list(session.scalars(stmt.order_by(EventNameRow.name)))


def of_profile(
    session: Session,
    *,
    caller: Caller,
    runtime: Runtime,
    external_id: str,
    limit: int,
    after: EventPosition | None = None,
    names: Sequence[str] = (),
) -> EventPage:
    """A page of a stored profile's events, newest first; :class:`NotFound` for no profile."""
    pid = get_profile(session, caller=caller, runtime=runtime, external_id=external_id).pid
    return runtime.profiles.profile_events(
        caller.workspace_id, pid, limit=limit, after=after, names=names
    )


def expire(session: Session, *, workspace_id: str, runtime: Runtime) -> int:
    """Drop the workspace's events older than its retention period; how many were dropped
    (none when it keeps events forever)."""
    days = session.scalar(
        select(WorkspaceRow.event_retention_days).where(WorkspaceRow.id == workspace_id)
    )
    if days is None:
        return 0
    return runtime.profiles.drop_events_before(workspace_id, utcnow() - timedelta(days=days))


def workspaces_with_retention(session: Session) -> list[str]:
    """The ids of workspaces that keep events for a limited time."""
    stmt = select(WorkspaceRow.id).where(WorkspaceRow.event_retention_days.is_not(None))
    return list(session.scalars(stmt.order_by(WorkspaceRow.id)))


def _written(
    records: Sequence[EventRecord], results: Sequence[EventResult]
) -> tuple[dict[int, str], Counter[str]]:
    """The external id of each pid whose events were written (not refused, not duplicates),
    and how many were written under each event name."""
    if any(map(_DUPLICATE, results)) or any(map(_ERRORS, results)):
        written = [
            (record, result)
            for record, result in zip(records, results, strict=True)
            if result.ok and not result.duplicate
        ]
        changed = {r.pid: r.external_id for _, r in written if r.pid is not None}
        return changed, Counter(record.name for record, _ in written)
    # The common case, every record written: read in C, without a Python step per record.
    pids = dict(zip(map(_PID, results), map(_EXTERNAL_ID, results), strict=True))
    return pids, Counter(map(_NAME, records))


_EXTERNAL_ID, _PID, _DUPLICATE, _ERRORS = map(itemgetter, range(4))
"""Fields of ``EventResult``, read in C (and below, of ``EventRecord``); the positions are
pinned by a test (``tests/engines/test_event_writes.py``)."""
_NAME, _PROPERTIES = itemgetter(1), itemgetter(3)


def _unknown_ids(runtime: Runtime, workspace_id: str, records: Sequence[EventRecord]) -> set[str]:
    """The external ids of ``records`` no stored profile has (the write will create them)."""
    ids = sorted({str(record.external_id) for record in records})
    known = runtime.profiles.pids_for(workspace_id, ids)
    return {external_id for external_id, pid in zip(ids, known, strict=True) if pid is None}


def _too_late(
    records: Sequence[EventRecord], now: datetime, limits: Limits
) -> dict[int, EventResult]:
    """A refusal per position of the records timed more than ``limits.max_future`` after
    ``now`` (one comparison each; a time that cannot be compared is left to the engine, which
    refuses it as invalid)."""
    latest = now + limits.max_future
    try:
        late = [n for n, record in enumerate(records) if record.timestamp > latest]
    except (OverflowError, TypeError):
        late = [n for n, record in enumerate(records) if _after(record.timestamp, latest)]
    message = f"the timestamp is more than {limits.max_future} after the time it was received"
    problem = ErrorDetail("timestamp_in_future", message, ("timestamp",))
    return {n: EventResult(records[n].external_id, None, errors=(problem,)) for n in late}


def _after(timestamp: datetime, latest: datetime) -> bool:
    try:
        return timestamp > latest
    except (OverflowError, TypeError):
        return False


def _count_names(session: Session, workspace_id: str, seen: Counter[str], now: datetime) -> None:
    """Add the events written to their names' counts, recording new names."""
    if not seen:
        return
    known = _known_names(session, workspace_id, list(seen))
    if len(known) < len(seen):
        declarations.lock_schema(session, workspace_id)  # then no other writer adds them too
        known = _known_names(session, workspace_id, list(seen))
    if known:
        statement = (
            update(EventNameRow)
            .where(EventNameRow.workspace_id == workspace_id, EventNameRow.name == bindparam("n"))
            .values(count=EventNameRow.count + bindparam("c"), last_seen_at=now)
        )
        session.connection().execute(statement, [{"n": n, "c": seen[n]} for n in sorted(known)])
    session.add_all(
        EventNameRow(
            workspace_id=workspace_id,
            name=name,
            first_seen_at=now,
            last_seen_at=now,
            count=seen[name],
        )
        for name in sorted(set(seen) - known)
    )
    session.flush()


def _known_names(session: Session, workspace_id: str, wanted: list[str]) -> set[str]:
    stmt = select(EventNameRow.name).where(
        EventNameRow.workspace_id == workspace_id, EventNameRow.name.in_(wanted)
    )
    return set(session.scalars(stmt))
