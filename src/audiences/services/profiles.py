"""Profiles: upsert (streaming audiences follow at once), read, erase, a profile's audiences."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, lazyload, undefer

from audiences.engines.base import EventRecord, Profile, UpsertResult
from audiences.engines.event_writes import check_events
from audiences.engines.writes import check_record
from audiences.errors import ErrorDetail, NotFound, Unprocessable, ValidationFailed
from audiences.kit.clock import utcnow
from audiences.membership.bitmaps import deserialize, serialize
from audiences.schemas.events import Event
from audiences.schemas.profiles import EvaluateEvent
from audiences.services import attributes, evaluation, event_properties, memberships
from audiences.services.callers import Caller
from audiences.services.runtime import Runtime
from audiences.store.read_cache import AudienceState, audience_state
from audiences.store.tables import AudienceRow, MembershipRow, RunRow


def upsert(
    session: Session,
    *,
    caller: Caller,
    runtime: Runtime,
    records: Sequence[tuple[str, dict[str, Any]]],
) -> list[UpsertResult]:
    """Merge attributes into profiles (created when new); a result per record, in order.

    Undeclared attributes are declared from their first telling value, or refused in a strict
    workspace (:func:`attributes.admit`). A record whose values contradict the schema is
    refused on its own; the rest are written. Streaming audiences are re-evaluated on the
    written profiles before this returns.
    """
    strict = attributes.admit(
        session, workspace_id=caller.workspace_id, runtime=runtime, records=[a for _, a in records]
    )
    streaming = evaluation.lock_streaming(session, caller.workspace_id)
    results = runtime.profiles.upsert_profiles(caller.workspace_id, records, strict=strict)
    written = {
        result.pid: result.profile
        for result in results
        if result.pid is not None and result.ok and result.profile is not None
    }
    evaluation.on_profiles_written(
        session,
        runtime=runtime,
        workspace_id=caller.workspace_id,
        pids=[result.pid for result in results if result.pid is not None and result.ok],
        written=written,
        streaming=streaming,
    )
    return results


def what_if(
    session: Session,
    *,
    caller: Caller,
    runtime: Runtime,
    external_id: str | None,
    attributes_: Mapping[str, Any],
    explain: bool,
    events: Sequence[EvaluateEvent] = (),
) -> list[evaluation.Verdict]:
    """Which audiences a profile would be in with these attributes (over the stored ones, when
    ``external_id`` names a stored profile) and these events (beside its stored ones); stores
    nothing.

    Declared attributes are checked and converted as an upsert would store them (ISO dates
    become dates, nested objects dotted names), so the answer is the one the stored profile
    would get; a value that contradicts the schema is refused with every problem named.
    """
    stored: dict[str, Any] = {}
    pid = None
    if external_id is not None:
        profile = get(session, caller=caller, runtime=runtime, external_id=external_id)
        stored, pid = profile.attributes, profile.pid
    schema = attributes.schema(session, workspace_id=caller.workspace_id)
    strict = attributes.is_strict(session, workspace_id=caller.workspace_id)
    values, extra, problems = check_record(
        external_id or "what-if", attributes_, schema, strict=strict
    )
    if problems:
        raise Unprocessable(
            "the attributes contradict the attribute schema",
            code="profile_invalid",
            errors=list(problems),
        )
    now = utcnow()
    given = _given_events(session, caller.workspace_id, events, now)
    # In canonical form, as stored (nested objects as dotted names), over the stored profile.
    # Undeclared attributes are passed too: rules cannot name them (nothing is declared here).
    return evaluation.evaluate_profile(
        session,
        runtime=runtime,
        workspace_id=caller.workspace_id,
        attributes_={**stored, **extra, **values},
        pid=pid,
        explain=explain,
        now=now,
        events=given,
    )


def _given_events(
    session: Session, workspace_id: str, given: Sequence[EvaluateEvent], now: datetime
) -> list[Event]:
    """The request's events typed as stored ones would be (undeclared properties left out:
    no rule can name them); a value that contradicts its declared type is refused."""
    schema = event_properties.schema(session, workspace_id=workspace_id)
    records = [
        EventRecord(
            "what-if",
            event.event,
            event.timestamp or now,
            {k: v for k, v in event.properties.items() if k.split(".")[0] in _roots(schema)},
        )
        for event in given
    ]
    passed, refused = check_events(records, schema)
    if refused:
        raise Unprocessable(
            "the events contradict the event property schema",
            code="profile_invalid",
            errors=[
                ErrorDetail(problem.code, problem.message, ("events", position, *problem.location))
                for position, result in sorted(refused.items())
                for problem in result.errors
            ],
        )
    return [Event(e.name, e.timestamp, e.values) for e in passed]


def _roots(schema: Mapping[str, Any]) -> set[str]:
    return {name.split(".")[0] for name in schema}


def get(session: Session, *, caller: Caller, runtime: Runtime, external_id: str) -> Profile:
    """A stored profile; :class:`NotFound` if the workspace has none with this id."""
    profile = runtime.profiles.get_profile(caller.workspace_id, external_id)
    if profile is None:
        raise NotFound(f"no profile {external_id!r}", code="profile_not_found")
    return profile


def delete(session: Session, *, caller: Caller, runtime: Runtime, external_id: str) -> None:
    """Erase a profile: from the engine, from every audience, and from every kept run snapshot."""
    pid = runtime.profiles.delete_profile(caller.workspace_id, external_id)
    if pid is None:
        raise NotFound(f"no profile {external_id!r}", code="profile_not_found")
    for audience in _audiences_holding(session, caller.workspace_id):
        memberships.apply(
            session,
            audience=audience,
            remove=[pid],
            cache=runtime.bitmaps,
            fold=True,
            cause="erasure",
        )
    snapshots = (
        select(RunRow)
        .where(RunRow.workspace_id == caller.workspace_id, RunRow.members_kept.is_(True))
        .options(undefer(RunRow.members))
    )
    for run in session.scalars(snapshots):
        members = deserialize(run.members or b"")
        if pid in members:
            members.discard(pid)
            run.members = serialize(members)
    session.flush()


def audiences_of(
    session: Session, *, caller: Caller, runtime: Runtime, external_id: str
) -> list[AudienceState]:
    """Every audience the profile is in now, by name.

    What the answer needed is left in the process's caches for :func:`cached_audiences_of`.
    """
    generation = runtime.reads.workspaces.generation
    pid = runtime.profiles.pids_for(caller.workspace_id, [external_id])[0]
    if pid is None:
        raise NotFound(f"no profile {external_id!r}", code="profile_not_found")
    every = list(
        session.scalars(
            select(AudienceRow)
            .where(AudienceRow.workspace_id == caller.workspace_id)
            .order_by(AudienceRow.name, AudienceRow.id)
            .options(lazyload(AudienceRow.label_rows))  # never shown here
        )
    )
    sets = memberships.many(session, runtime=runtime, audience_ids=[a.id for a in every])
    states = memberships.states(session, [a.id for a in every])
    listing = tuple(audience_state(a, states.get(a.id)) for a in every)
    runtime.reads.workspaces.put(caller.workspace_id, listing, generation)
    return [state for state in listing if pid in sets[state.id]]


def cached_audiences_of(
    runtime: Runtime, *, caller: Caller, external_id: str
) -> list[AudienceState] | None:
    """The answer of :func:`audiences_of` from memory alone, without waiting on a lock or a
    database; None when something it needs is not cached."""
    listing = runtime.reads.workspaces.get(caller.workspace_id)
    pid = runtime.known_pid(caller.workspace_id, external_id)
    if listing is None or pid is None:
        return None
    found = []
    for state in listing:
        members = memberships.cached(runtime, state.id, state.revision)
        if members is None:
            return None
        if pid in members:
            found.append(state)
    return found


def check_batch_size(count: int, limit: int) -> None:
    """Refuse a batch over ``limit`` records."""
    if count > limit:
        raise ValidationFailed(
            f"at most {limit} profiles per call, got {count}", code="too_many_ids"
        )


def _audiences_holding(session: Session, workspace_id: str) -> list[AudienceRow]:
    stmt = (
        select(AudienceRow)
        .join(MembershipRow, MembershipRow.audience_id == AudienceRow.id)
        .where(AudienceRow.workspace_id == workspace_id, MembershipRow.revision > 0)
        .order_by(AudienceRow.id)  # the order streaming writes lock in: no deadlock between them
    )
    return list(session.scalars(stmt))
