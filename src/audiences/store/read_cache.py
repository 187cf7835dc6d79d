"""Short-lived in-process copies of the metadata that the hottest reads need.

Is-member and a profile's audiences are asked far more often than anything changes. Answering
them from memory (the caller behind a key, an audience's owner and membership revision, a
workspace's audiences) lets those routes skip the metadata database altogether.

Staleness is bounded twice. A commit in this process that touches an audience or an API key drops
the affected entries at once, and one that only moves an audience's membership to a new revision
installs that revision in the entries it finds (SQLAlchemy session events collect what a flush
changed; the commit hook applies it), so a process always reads its own writes and streaming
writes do not empty the cache the hottest reads depend on. A commit made by
another process is seen after at most ``ttl`` seconds, when the entry expires. Answers carry the
``computed_at`` of the membership revision they used, so a reader can always tell how fresh one is.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import partial
from typing import Any, Generic, TypeVar

from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from audiences.store.tables import ApiKeyRow, AudienceRow, MembershipRow

V = TypeVar("V")
C = TypeVar("C")

MAX_ENTRIES = 100_000
"""Entries each map keeps before it starts over (a bound on memory, not a tuning knob)."""


@dataclass(frozen=True)
class AudienceState:
    """What a membership read needs of an audience: whose it is and which revision is current."""

    id: str
    workspace_id: str
    key: str
    name: str
    revision: int
    computed_at: datetime | None


def audience_state(audience: AudienceRow, membership: MembershipRow | None) -> AudienceState:
    """The cached view of an audience and its membership state row (None before any write)."""
    return AudienceState(
        id=audience.id,
        workspace_id=audience.workspace_id,
        key=audience.key,
        name=audience.name,
        revision=0 if membership is None else membership.revision,
        computed_at=None if membership is None else membership.computed_at,
    )


class ExpiringMap(Generic[V]):
    """A dict whose entries expire ``ttl`` seconds after they were stored.

    A put carries the generation read before the value was fetched from the database: if an
    invalidation happened since, the value may predate it and is not stored.
    """

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._entries: dict[Hashable, tuple[float, V]] = {}
        self._generation = itertools.count()
        self._current = next(self._generation)
        self._lock = threading.Lock()

    @property
    def generation(self) -> int:
        """Changes on every invalidation; pass it back to :meth:`put`."""
        return self._current

    def get(self, key: Hashable) -> V | None:
        """The live value for ``key``, or None."""
        entry = self._entries.get(key)
        if entry is None or entry[0] < self._clock():
            return None
        return entry[1]

    def put(self, key: Hashable, value: V, generation: int) -> None:
        """Keep ``value`` unless the map was invalidated after ``generation`` was read."""
        if self.ttl <= 0:
            return
        with self._lock:
            if generation != self._current:
                return
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[key] = (self._clock() + self.ttl, value)

    def revise(self, changes: Mapping[Hashable, Callable[[V], V]]) -> None:
        """Start a new generation and replace each live entry named in ``changes`` by what its
        function makes of it, keeping its expiry; absent keys stay absent."""
        with self._lock:
            self._current = next(self._generation)
            for key, change in changes.items():
                entry = self._entries.get(key)
                if entry is not None:
                    self._entries[key] = (entry[0], change(entry[1]))

    def discard(self, keys: set[Hashable] | None = None) -> None:
        """Drop these keys (all of them when None) and start a new generation."""
        with self._lock:
            self._current = next(self._generation)
            if keys is None:
                self._entries.clear()
            else:
                for key in keys:
                    self._entries.pop(key, None)


class ReadCache(Generic[C]):
    """The process's cached callers (of type ``C``, what authentication makes of a key),
    audience states and workspace audience lists."""

    def __init__(self, ttl: float = 2.0) -> None:
        self.callers: ExpiringMap[C] = ExpiringMap(ttl)
        self.audiences: ExpiringMap[AudienceState] = ExpiringMap(ttl)
        self.workspaces: ExpiringMap[tuple[AudienceState, ...]] = ExpiringMap(ttl)

    def watch(self, factory: sessionmaker[Session]) -> None:
        """Keep this cache in step with the commits of sessions ``factory`` makes: what a flush
        changed is collected, and applied when the transaction commits."""
        event.listen(factory, "after_flush", _collect)
        event.listen(factory, "after_rollback", _unrevise)
        event.listen(factory, "after_commit", partial(_apply, self))

    def forget(self, change: _Changes) -> None:
        """Drop what a committed transaction changed, and install the membership revisions it
        committed for audiences it did not otherwise change."""
        if change.keys:
            # Keys are cached by token digest, which a revoke does not know: drop them all.
            self.callers.discard()
        if change.audiences:
            self.audiences.discard(set(change.audiences))
        if change.workspaces:
            self.workspaces.discard(set(change.workspaces))
        revisions = {
            audience_id: revision
            for audience_id, revision in change.revisions.items()
            if audience_id not in change.audiences
        }
        if revisions:
            self.audiences.revise(
                {audience_id: partial(_advanced, revisions) for audience_id in revisions}
            )
            workspaces = {revision.workspace_id for revision in revisions.values()}
            self.workspaces.revise(
                {
                    workspace_id: partial(_advanced_listing, revisions)
                    for workspace_id in workspaces - change.workspaces
                }
            )


@dataclass(frozen=True)
class _Revision:
    """A membership revision a transaction committed."""

    workspace_id: str
    revision: int
    computed_at: datetime | None


def _advanced(revisions: Mapping[str, _Revision], state: AudienceState) -> AudienceState:
    """The state at its committed revision; never an older one (hooks of two commits may run
    in either order)."""
    new = revisions.get(state.id)
    if new is None or new.revision <= state.revision:
        return state
    return replace(state, revision=new.revision, computed_at=new.computed_at)


def _advanced_listing(
    revisions: Mapping[str, _Revision], listing: tuple[AudienceState, ...]
) -> tuple[AudienceState, ...]:
    return tuple(_advanced(revisions, state) for state in listing)


@dataclass
class _Changes:
    """What a transaction's flushes touched, applied to every cache when it commits."""

    keys: bool = False
    audiences: set[str] = field(default_factory=set)
    workspaces: set[str] = field(default_factory=set)
    revisions: dict[str, _Revision] = field(default_factory=dict)


_INFO_KEY = "audiences.read_cache.changes"


def _collect(session: Session, _context: Any) -> None:
    changes: _Changes = session.info.setdefault(_INFO_KEY, _Changes())
    for row in itertools.chain(session.new, session.dirty, session.deleted):
        if isinstance(row, ApiKeyRow):
            changes.keys = True
        elif isinstance(row, AudienceRow):
            changes.audiences.add(row.id)
            changes.workspaces.add(row.workspace_id)
        elif isinstance(row, MembershipRow):
            if row in session.deleted:
                changes.audiences.add(row.audience_id)
                changes.workspaces.add(row.workspace_id)
            else:
                changes.revisions[row.audience_id] = _Revision(
                    row.workspace_id, row.revision, row.computed_at
                )


def _unrevise(session: Session) -> None:
    # A revision that was rolled back must not be installed by the session's next commit: drop
    # those entries instead, as any other change (a reload, never a stale answer).
    changes: _Changes | None = session.info.get(_INFO_KEY)
    if changes is not None and changes.revisions:
        changes.audiences.update(changes.revisions)
        changes.workspaces.update(r.workspace_id for r in changes.revisions.values())
        changes.revisions.clear()


def _apply(cache: ReadCache[Any], session: Session) -> None:
    # A rolled-back transaction's changes stay recorded and are applied at the session's next
    # commit: dropping entries that did not change costs a reload, never a stale answer.
    changes: _Changes | None = session.info.pop(_INFO_KEY, None)
    if changes is not None:
        cache.forget(changes)
