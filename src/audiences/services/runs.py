"""Runs and what they tell: run history, members (now or as of a run), changes since a run."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pyroaring import AbstractBitMap, BitMap
from sqlalchemy.orm import Session

from audiences.errors import Conflict, NotFound
from audiences.membership.bitmaps import deserialize, page
from audiences.schemas.common import ListQuery, PageResult
from audiences.services import audiences, evaluation, memberships
from audiences.services.callers import Caller
from audiences.services.runtime import Runtime
from audiences.store.read_cache import audience_state
from audiences.store.repositories.runs import RunRepository
from audiences.store.tables import RunRow

EXPORT_CHUNK = 10_000


@dataclass(frozen=True)
class MemberPage:
    """A page of members in pid order: external ids, the last pid, and as of when."""

    ids: list[str]
    last_pid: int | None
    has_more: bool
    total: int
    computed_at: datetime | None


@dataclass(frozen=True)
class ChangePage:
    """A page of changes between two member sets: (external id, ``entered`` or ``exited``) in
    pid order; ``since`` and ``run_id`` name the runs they lie between (None: no run before,
    or now)."""

    changes: list[tuple[str, str]]
    last_pid: int | None
    has_more: bool
    entered: int
    exited: int
    computed_at: datetime | None
    since: str | None = None
    run_id: str | None = None


@dataclass(frozen=True)
class MemberAnswer:
    """Is a profile a member, as of when, and (when asked) why by the rule now."""

    member: bool
    computed_at: datetime | None
    explanation: dict[str, Any] | None


def is_member(
    session: Session,
    *,
    caller: Caller,
    runtime: Runtime,
    audience_id: str,
    external_id: str,
    explain: bool,
) -> MemberAnswer:
    """Answer from the stored membership; the explanation evaluates the rule on the profile now.

    What the answer needed is left in the process's caches for :func:`cached_is_member`.
    """
    generation = runtime.reads.audiences.generation
    audience = audiences.get(session, caller=caller, audience_id=audience_id, labels=False)
    pid = runtime.profiles.pids_for(caller.workspace_id, [external_id])[0]
    if pid is None:
        raise NotFound(f"no profile {external_id!r}", code="profile_not_found")
    members, state = memberships.current_with_state(
        session, runtime=runtime, audience_id=audience.id
    )
    runtime.reads.audiences.put(audience.id, audience_state(audience, state), generation)
    explanation = None
    if explain:
        profile = runtime.profiles.get_profile(caller.workspace_id, external_id)
        if profile is None:
            raise NotFound(f"no profile {external_id!r}", code="profile_not_found")
        explanation = evaluation.explain_member(
            session, runtime=runtime, audience=audience, attributes_=profile.attributes, pid=pid
        )
    return MemberAnswer(
        member=pid in members,
        computed_at=None if state is None else state.computed_at,
        explanation=explanation,
    )


def cached_is_member(
    runtime: Runtime, *, caller: Caller, audience_id: str, external_id: str
) -> MemberAnswer | None:
    """The answer of :func:`is_member` (without explanation) from memory alone, without
    waiting on a lock or a database; None when something it needs is not cached."""
    state = runtime.reads.audiences.get(audience_id)
    if state is None or state.workspace_id != caller.workspace_id:
        return None
    pid = runtime.known_pid(caller.workspace_id, external_id)
    if pid is None:
        return None
    members = memberships.cached(runtime, state.id, state.revision)
    if members is None:
        return None
    return MemberAnswer(member=pid in members, computed_at=state.computed_at, explanation=None)


def list_(
    session: Session, *, caller: Caller, audience_id: str, query: ListQuery
) -> PageResult[RunRow]:
    """A page of an audience's runs, newest first by default."""
    audiences.get(session, caller=caller, audience_id=audience_id)
    return RunRepository(session, caller.workspace_id, audience_id).page(query)


def get(session: Session, *, caller: Caller, audience_id: str, run_id: str) -> RunRow:
    """One run of an audience."""
    run = RunRepository(session, caller.workspace_id, audience_id).get(run_id)
    if run is None:
        raise NotFound(f"no run {run_id!r} of this audience", code="run_not_found")
    return run


def members(
    session: Session,
    *,
    caller: Caller,
    runtime: Runtime,
    audience_id: str,
    after: int | None,
    limit: int,
    as_of: str | None = None,
) -> MemberPage:
    """A page of members after pid ``after``: stable between pages because pids only sort."""
    bitmap, computed_at = _member_set(session, caller, runtime, audience_id, as_of)
    pids = page(bitmap, after, limit + 1)
    has_more = len(pids) > limit
    pids = pids[:limit]
    ids = runtime.profiles.external_ids_for(caller.workspace_id, pids)
    return MemberPage(
        ids=[external for external in ids if external is not None],
        last_pid=pids[-1] if pids else after,
        has_more=has_more,
        total=len(bitmap),
        computed_at=computed_at,
    )


def export(
    session: Session, *, caller: Caller, runtime: Runtime, audience_id: str
) -> tuple[Iterator[list[str]], datetime | None]:
    """Every member's external id, in chunks, as of now."""
    bitmap, computed_at = _member_set(session, caller, runtime, audience_id, None)

    def chunks() -> Iterator[list[str]]:
        after: int | None = None
        while True:
            pids = page(bitmap, after, EXPORT_CHUNK)
            if not pids:
                return
            after = pids[-1]
            ids = runtime.profiles.external_ids_for(caller.workspace_id, pids)
            yield [external for external in ids if external is not None]

    return chunks(), computed_at


def changes(
    session: Session,
    *,
    caller: Caller,
    runtime: Runtime,
    audience_id: str,
    since: str | None,
    after: int | None,
    limit: int,
    run_id: str | None = None,
) -> ChangePage:
    """Who entered and who exited between run ``since`` and now, a page at a time.

    Without ``since``: the changes of the audience's latest succeeded run (``run_id`` pins the
    run, so later pages stay on the one the first page found), from the succeeded run before it
    (or from no members, for its first).
    """
    if since is None:
        then, now, computed_at, since, run_id = _latest_change(session, caller, audience_id, run_id)
    else:
        then, _ = _member_set(session, caller, runtime, audience_id, since)
        now, computed_at = _member_set(session, caller, runtime, audience_id, None)
    entered, exited = now - then, then - now
    moved = entered | exited
    pids = page(moved, after, limit + 1)
    has_more = len(pids) > limit
    pids = pids[:limit]
    ids = runtime.profiles.external_ids_for(caller.workspace_id, pids)
    listed = [
        (external, "entered" if pid in entered else "exited")
        for pid, external in zip(pids, ids, strict=True)
        if external is not None
    ]
    return ChangePage(
        changes=listed,
        last_pid=pids[-1] if pids else after,
        has_more=has_more,
        entered=len(entered),
        exited=len(exited),
        computed_at=computed_at,
        since=since,
        run_id=run_id,
    )


def _latest_change(
    session: Session, caller: Caller, audience_id: str, run_id: str | None
) -> tuple[AbstractBitMap, AbstractBitMap, datetime | None, str | None, str | None]:
    """The members before and after the latest succeeded run (or ``run_id``), as of when,
    and the two runs' ids (None for none)."""
    audience = audiences.get(session, caller=caller, audience_id=audience_id)
    repo = RunRepository(session, caller.workspace_id, audience.id)
    if run_id is None:
        run = repo.last_succeeded()
    else:
        run = get(session, caller=caller, audience_id=audience.id, run_id=run_id)
    if run is None:
        return BitMap(), BitMap(), None, None, None
    previous = repo.last_succeeded(before=run.number)
    then = BitMap() if previous is None else _kept(previous)
    return then, _kept(run), run.finished_at, None if previous is None else previous.id, run.id


def _kept(run: RunRow) -> AbstractBitMap:
    """The member set a run kept; 409 when it is gone."""
    if not run.members_kept or run.members is None:
        reason = "failed" if run.status == "failed" else "is older than the snapshots kept"
        raise Conflict(
            f"run {run.id!r} {reason}: its members are not available", code="run_expired"
        )
    return deserialize(run.members)


def _member_set(
    session: Session, caller: Caller, runtime: Runtime, audience_id: str, as_of: str | None
) -> tuple[AbstractBitMap, datetime | None]:
    audience = audiences.get(session, caller=caller, audience_id=audience_id)
    if as_of is None:
        state = memberships.states(session, [audience.id]).get(audience.id)
        bitmap = memberships.current(session, runtime=runtime, audience_id=audience.id)
        return bitmap, None if state is None else state.computed_at
    run = get(session, caller=caller, audience_id=audience.id, run_id=as_of)
    return _kept(run), run.finished_at
