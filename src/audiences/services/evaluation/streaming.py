"""Streaming evaluation: when profiles or their events are written, every streaming audience's
rule runs on them (all compiled into one Python function) and the memberships change before the
write returns. Rules that read events get each profile's events under ``rules.EVENTS_KEY``: only
those some rule can read (``rules.event_scopes``: the names and windows their filters require),
all profiles' in one engine query."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

import numpy as np
from pyroaring import BitMap
from sqlalchemy import select
from sqlalchemy.orm import Session, lazyload, load_only

from audiences import rules
from audiences.engines.base import EventSlice, Profile, pids_to_bitmap
from audiences.services import (
    definitions,
    lifecycle,
    memberships,
)
from audiences.services.evaluation.compiled import (
    answerer,
    at,
    clock,
    compiled_rules,
    member_sets,
    view,
    workspace_schema,
)
from audiences.services.runtime import Runtime
from audiences.store.tables import AudienceRow


def on_profiles_written(
    session: Session,
    *,
    runtime: Runtime,
    workspace_id: str,
    pids: Iterable[int],
    written: Mapping[int, Profile] | None = None,
    streaming: list[AudienceRow] | None = None,
    now: datetime | None = None,
) -> None:
    """Re-evaluate every streaming audience on these profiles (deleted ones leave them all),
    as of ``now`` (default: ``compiled.clock()``, the current time unless ``compiled.at`` set it).

    ``written`` are the profiles as this transaction wrote them, by pid, used instead of
    reading them back; pass them, with the ``streaming`` audiences it returned, only when
    :func:`lock_streaming` ran before the write.
    """
    if streaming is None:
        streaming = streaming_audiences(session, workspace_id)
    wanted = sorted(set(pids))
    if not streaming or not wanted:
        return
    # Lock before reading (in one order, so writers cannot deadlock): of two concurrent writers
    # of a profile, the later to lock reads the later data, so membership ends as the last write
    # says. SQLite serialises writers already; PostgreSQL needs the row locks.
    memberships.lock_all(session, streaming)
    schema = workspace_schema(session, workspace_id)
    # Every streaming rule at once, per profile: an audience's rule reads the answers of the
    # streaming audiences before it directly, and only the stored members of the audiences
    # outside the set that some rule asks about (in_audience).
    compiled = compiled_rules(tuple((a.key, a.rule or "") for a in streaming), schema)
    views = profile_views(runtime, workspace_id, wanted, written, attributes=compiled.attributes)
    moment = now if now is not None else clock()
    if compiled.events:
        views = with_events(runtime, workspace_id, views, scopes=compiled.scopes, now=moment)
    check = compiled.answers
    with at(moment):
        if compiled.asks:
            answer = answerer(member_sets(session, runtime, workspace_id, keys=compiled.asks))
            found = {pid: check(view(attrs, pid, answer)) for pid, attrs in views.items()}
        else:
            found = {pid: check(attrs) for pid, attrs in views.items()}
    # One row of answers per profile; each audience's column picks the pids that enter it.
    evaluated = np.fromiter(found, dtype=np.uint32, count=len(found))
    answers = np.array(list(found.values()), dtype=bool).reshape(len(found), len(streaming))
    everyone = BitMap(wanted)
    for index, audience in enumerate(streaming):
        entering = pids_to_bitmap(evaluated[answers[:, index]])
        memberships.apply(
            session,
            audience=audience,
            add=entering,
            remove=everyone - entering,
            cache=runtime.bitmaps,
        )


def profile_views(
    runtime: Runtime,
    workspace_id: str,
    wanted: list[int],
    written: Mapping[int, Profile] | None,
    *,
    attributes: bool,
) -> dict[int, Mapping[str, Any]]:
    """The attributes of each profile of ``wanted`` that exists, by pid: the ``written`` ones
    when they are all there, else read; when the rules read no ``attributes``, only whether
    each exists is read (its external id: a fifth of the CPU of its row, measured).
    """
    if written is not None and all(pid in written for pid in wanted):
        profiles: Sequence[Profile | None] = [written[pid] for pid in wanted]
    elif attributes:
        profiles = runtime.profiles.get_profiles_by_pid(workspace_id, wanted)
    else:
        ids = runtime.profiles.external_ids_for(workspace_id, wanted)
        return {pid: {} for pid, eid in zip(wanted, ids, strict=True) if eid is not None}
    return {
        pid: profile.attributes for pid, profile in zip(wanted, profiles, strict=True) if profile
    }


def with_events(
    runtime: Runtime,
    workspace_id: str,
    views: Mapping[int, Mapping[str, Any]],
    *,
    scopes: frozenset[rules.EventScope] | None,
    now: datetime,
) -> dict[int, Mapping[str, Any]]:
    """The profiles' attributes with their events under ``rules.EVENTS_KEY`` (oldest first),
    read in one engine call: only those in the rules' ``scopes`` as of ``now`` (every event
    when None), which are all the rules can read. A profile without any is left as it is
    (none, to a rule)."""
    found = runtime.profiles.events_of(workspace_id, list(views), slices=slices(scopes, now))
    return {
        pid: {**attrs, rules.EVENTS_KEY: found[pid]} if pid in found else attrs
        for pid, attrs in views.items()
    }


def slices(scopes: frozenset[rules.EventScope] | None, now: datetime) -> list[EventSlice] | None:
    """The engine's slices of events that ``scopes`` read as of ``now``, in a stable order.

    >>> from datetime import UTC, timedelta
    >>> now = datetime(2024, 5, 1, tzinfo=UTC)
    >>> [found] = slices(frozenset({rules.EventScope(frozenset("ba"), timedelta(1))}), now)
    >>> found.names, found.since.isoformat()
    (('a', 'b'), '2024-04-30T00:00:00+00:00')
    """
    if scopes is None:
        return None
    return sorted(
        (
            EventSlice(
                None if names is None else tuple(sorted(names)),
                None if back is None else now - back,
            )
            for names, back in scopes
        ),
        key=repr,
    )


def following_events(streaming: list[AudienceRow]) -> list[AudienceRow]:
    """The streaming audiences (kept in dependency order) that events move: those whose rule
    reads events and those that ask about one of them (``in_audience``). An event write or the
    clock passing a window boundary changes no attribute, so the others keep their answers."""
    moved: set[str] = set()
    for audience in streaming:
        if reads_events(audience.rule or "") or moved.intersection(audience.dependencies):
            moved.add(audience.key)
    return [audience for audience in streaming if audience.key in moved]


@lru_cache(maxsize=1024)
def reads_events(rule: str) -> bool:
    """Whether a stored rule's text reads events."""
    return bool(rule) and rules.is_behavioural(rules.parse_rule(rule).tree)


def lock_streaming(session: Session, workspace_id: str) -> list[AudienceRow]:
    """Take the membership locks of the workspace's streaming audiences (returned), before a
    profile write whose written rows :func:`on_profiles_written` will use: the later writer to
    lock then also writes later, so the rows it evaluates are the last ones."""
    streaming = streaming_audiences(session, workspace_id)
    memberships.lock_all(session, streaming)
    return streaming


def streaming_audiences(session: Session, workspace_id: str) -> list[AudienceRow]:
    """Live dynamic audiences kept current on every write, each after those it depends on."""
    keyed = _streaming_ids(tuple(definitions.graph(session, workspace_id)))
    if not keyed:
        return []
    stmt = (
        select(AudienceRow)
        .where(AudienceRow.id.in_(keyed))
        # Only what evaluating and writing membership read; the rest loads if touched.
        .options(
            lazyload(AudienceRow.label_rows),
            load_only(
                AudienceRow.workspace_id,
                AudienceRow.key,
                AudienceRow.kind,
                AudienceRow.rule,
                AudienceRow.refresh_mode,
                AudienceRow.dependencies,
            ),
        )
    )
    found = {audience.id: audience for audience in session.scalars(stmt)}
    return [found[audience_id] for audience_id in keyed if audience_id in found]


@lru_cache(maxsize=256)
def _streaming_ids(nodes: tuple[definitions.Node, ...]) -> tuple[str, ...]:
    """The ids of a graph's streaming audiences in dependency order (cached: the graph of a
    workspace changes far less often than its profiles are written)."""
    modes = definitions.modes(nodes)
    # A parked audience is not evaluated; those whose rules read it read its last members.
    candidates = {
        n.key: n
        for n in nodes
        if n.kind == "dynamic"
        and not lifecycle.parked(n)
        and n.rule is not None
        and n.refresh_mode == "streaming"
        and n.key in modes
        and modes[n.key].mode == "streaming"
    }
    graph = {key: [k for k in n.dependencies if k in candidates] for key, n in candidates.items()}
    return tuple(candidates[key].id for key in rules.evaluation_order(graph) if key in candidates)
