"""Audience membership state: members read through the bitmap cache, writes with a new revision.

Stored members are a base bitmap plus deltas (who entered, who exited) of the revisions after
it. A streaming write appends one small delta instead of rewriting the whole set; once the
deltas pass :data:`FOLD_DELTAS` or :data:`FOLD_BYTES`, the write folds them into a new base in
the same transaction, so a cold read stays one base and a bounded number of small rows, and the
cost of rewriting the base is shared by the writes before it. A replace (batch run, static
write) always writes a new base.

The cache holds (audience, revision) -> members only for committed revisions: a writer hands
its result to the cache after its transaction commits (see :func:`_fill_after_commit`), so the
next write and the readers skip reading the store.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pyroaring import AbstractBitMap, BitMap, FrozenBitMap
from sqlalchemy import (
    Integer,
    LargeBinary,
    cast,
    delete,
    event,
    inspect,
    literal_column,
    null,
    select,
    union_all,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, SessionTransaction

from audiences.kit.clock import utcnow
from audiences.membership.bitmaps import Diff, deserialize, diff, frozen, serialize
from audiences.membership.cache import BitmapCache
from audiences.services import outbox
from audiences.services.runtime import Runtime
from audiences.store.tables import AudienceRow, MembershipDeltaRow, MembershipRow

EMPTY = FrozenBitMap()
FOLD_DELTAS = 64
"""Deltas an audience keeps above its base before a write folds them in."""
FOLD_BYTES = 1 << 20
"""Serialized delta bytes an audience keeps above its base before a write folds them in."""

_TRANSACTION = "audiences.memberships.transaction"


def states(session: Session, audience_ids: Iterable[str]) -> dict[str, MembershipRow]:
    """The evaluation state of each audience that has one (bitmaps not loaded)."""
    stmt = select(MembershipRow).where(MembershipRow.audience_id.in_(list(audience_ids)))
    return {row.audience_id: row for row in session.scalars(stmt)}


def current_with_state(
    session: Session, *, runtime: Runtime, audience_id: str
) -> tuple[FrozenBitMap, MembershipRow | None]:
    """The audience's members now and its state row, in one query when the bitmap is cached."""
    state = states(session, [audience_id]).get(audience_id)
    if state is None or state.revision == 0:
        return EMPTY, state
    return _cached(session, runtime.bitmaps, audience_id, state.revision), state


def cached(runtime: Runtime, audience_id: str, revision: int) -> FrozenBitMap | None:
    """The members at ``revision`` if this process holds them in memory (empty at 0)."""
    return EMPTY if revision == 0 else runtime.bitmaps.get((audience_id, revision))


def current(session: Session, *, runtime: Runtime, audience_id: str) -> FrozenBitMap:
    """The audience's members now (empty before its first evaluation)."""
    return many(session, runtime=runtime, audience_ids=[audience_id])[audience_id]


def many(
    session: Session, *, runtime: Runtime, audience_ids: Iterable[str]
) -> dict[str, FrozenBitMap]:
    """Current members of several audiences, by id; the store is read only on a cache miss."""
    wanted = list(audience_ids)
    found: dict[str, FrozenBitMap] = dict.fromkeys(wanted, EMPTY)
    revisions = session.execute(
        select(MembershipRow.audience_id, MembershipRow.revision).where(
            MembershipRow.audience_id.in_(wanted), MembershipRow.revision > 0
        )
    ).all()
    for audience_id, revision in revisions:
        found[audience_id] = _cached(session, runtime.bitmaps, audience_id, revision)
    return found


def replace(
    session: Session,
    *,
    audience: AudienceRow,
    members: AbstractBitMap,
    cache: BitmapCache | None = None,
    fold: bool = True,
    cause: str = "write",
) -> Diff:
    """Make ``members`` the audience's membership; returns who entered and who exited.

    Stored as a new base, or with ``fold=False`` as a delta while the deltas stay under the
    fold thresholds (a small write to a large static list). ``cause`` (``run:<id>``,
    ``write``, …) goes with the change to the destinations that follow the audience."""
    state = locked(session, audience)
    before = members_of(session, state, cache)
    change = diff(before, members)
    _advance(session, audience, state, members, change, fold=fold, cache=cache, cause=cause)
    return change


def apply(
    session: Session,
    *,
    audience: AudienceRow,
    add: Iterable[int] = (),
    remove: Iterable[int] = (),
    cache: BitmapCache | None = None,
    fold: bool = False,
    cause: str = "stream",
) -> Diff:
    """Add and remove single members (streaming writes, erasure); returns the effective change.

    A pid both added and removed is removed. The change is stored as a delta unless the deltas
    pass the fold thresholds, or ``fold`` asks for a new base with no deltas at all (erasure:
    no stored delta may keep the pid, even one it entered and left by since).
    """
    state = locked(session, audience)
    before = members_of(session, state, cache)
    removing = BitMap(remove)
    entered = BitMap(add) - removing - before
    exited = removing & before
    change = Diff(entered=entered, exited=exited)
    if entered or exited:
        after = (before | entered) - exited
        _advance(session, audience, state, after, change, fold=fold, cache=cache, cause=cause)
    elif fold and state.delta_bytes > 0:
        _write_base(session, state, before)  # the same members, with no delta left behind
    return change


def locked(session: Session, audience: AudienceRow) -> MembershipRow:
    """The audience's state row, created if missing, locked for this transaction.

    The row lock makes concurrent writers to one audience queue up on PostgreSQL instead of
    losing each other's changes; SQLite serialises writers already (BEGIN IMMEDIATE).
    """
    return lock_all(session, [audience])[audience.id]


def lock_all(session: Session, audiences: Iterable[AudienceRow]) -> dict[str, MembershipRow]:
    """The state rows of several audiences by id, created if missing, locked in id order.

    Writers that lock in one order cannot deadlock. A row this transaction locked already is
    not asked for again, so a writer may lock all it needs up front and write one by one.
    """
    held = _transaction(session).locked
    wanted = {audience.id: audience for audience in audiences}
    missing = sorted(key for key in wanted if key not in held)
    if missing:
        held.update(_select_locked(session, missing))
        absent = [wanted[key] for key in missing if key not in held]
        if absent:
            # Two first writers both find no row: a plain INSERT would fail one of them on
            # the primary key (PostgreSQL). ON CONFLICT DO NOTHING waits for the other's
            # commit instead, and the SELECT after it sees and locks that row.
            insert = (
                postgresql.insert
                if session.get_bind().dialect.name == "postgresql"
                else sqlite.insert
            )
            session.execute(
                insert(MembershipRow)
                .values(
                    [
                        {"audience_id": a.id, "workspace_id": a.workspace_id, "revision": 0}
                        for a in absent
                    ]
                )
                .on_conflict_do_nothing(index_elements=["audience_id"])
            )
            held.update(_select_locked(session, [a.id for a in absent]))
    return {key: held[key] for key in wanted}


def _select_locked(session: Session, audience_ids: list[str]) -> dict[str, MembershipRow]:
    stmt = (
        select(MembershipRow)
        .where(MembershipRow.audience_id.in_(audience_ids))
        .order_by(MembershipRow.audience_id)
        .with_for_update()
        # A row loaded earlier (another transaction of this session, an unlocked read) is
        # refreshed: only what the lock saw is current.
        .execution_options(populate_existing=True)
    )
    return {row.audience_id: row for row in session.scalars(stmt)}


def members_of(
    session: Session, state: MembershipRow, cache: BitmapCache | None = None
) -> AbstractBitMap:
    """The members at a locked state's revision: this transaction's last write, or the cache
    (committed revisions only), or the stored base and deltas."""
    pending = _transaction(session).pending.get(state.audience_id)
    if pending is not None and pending[1] == state.revision:
        return pending[2]
    if state.revision == 0:
        return EMPTY
    if cache is not None:
        # The row lock held here keeps the revision from moving, and a cached revision is
        # always what that revision committed.
        cached = cache.get((state.audience_id, state.revision))
        if cached is not None:
            return cached
    return _read(session, state.audience_id)[1]


def _advance(
    session: Session,
    audience: AudienceRow,
    state: MembershipRow,
    members: AbstractBitMap,
    change: Diff,
    *,
    fold: bool,
    cache: BitmapCache | None,
    cause: str,
) -> None:
    """Store ``members`` as the next revision: a delta, or a new base when folding; and the
    change in the outbox when a destination follows the audience."""
    # The stored base is these very members when nothing changed and no delta sits above it:
    # it is kept as the new revision's base instead of being serialized and written again.
    kept = not (change.entered or change.exited) and state.base_revision == state.revision
    kept = kept and state.delta_bytes == 0
    state.revision += 1
    state.size = len(members)
    state.computed_at = utcnow()
    if change.entered or change.exited:
        state.members_changed_at = state.computed_at
    if kept:
        state.base_revision = state.revision
    elif not _append_delta(session, state, change, fold=fold):
        _write_base(session, state, members)
    ours = _transaction(session)
    ours.pending[state.audience_id] = (cache, state.revision, frozen(members))
    found = ours.subscribers.get(audience.workspace_id)
    if found is None:
        found = ours.subscribers[audience.workspace_id] = outbox.subscribers(
            session, audience.workspace_id
        )
    outbox.record(
        session,
        audience=audience,
        revision=state.revision,
        change=change,
        cause=cause,
        found=found,
        woken=ours.woken,
    )


def written_base(state: MembershipRow) -> bytes | None:
    """The base bytes this session holds for a state row (written by this transaction, or
    loaded), without reading the store; None when it holds none."""
    found = inspect(state).dict.get("bitmap")
    return found if isinstance(found, bytes) else None


def _append_delta(session: Session, state: MembershipRow, change: Diff, *, fold: bool) -> bool:
    """Store the state's new revision as a delta, unless it is time to fold; whether it did."""
    if fold or state.revision - state.base_revision > FOLD_DELTAS:
        return False
    entered, exited = serialize(change.entered), serialize(change.exited)
    weight = state.delta_bytes + len(entered) + len(exited)
    if weight > FOLD_BYTES:
        return False
    session.add(
        MembershipDeltaRow(
            audience_id=state.audience_id, revision=state.revision, entered=entered, exited=exited
        )
    )
    state.delta_bytes = weight
    return True


def _write_base(session: Session, state: MembershipRow, members: AbstractBitMap) -> None:
    """Make ``members`` the base at the state's revision and drop the deltas below it."""
    had_deltas = state.delta_bytes > 0  # every stored delta weighs something
    state.bitmap = serialize(members)
    state.base_revision = state.revision
    state.delta_bytes = 0
    if had_deltas:
        session.execute(
            delete(MembershipDeltaRow).where(MembershipDeltaRow.audience_id == state.audience_id)
        )


def _cached(session: Session, cache: BitmapCache, audience_id: str, revision: int) -> FrozenBitMap:
    """Members at ``revision`` from the cache, else read (perhaps a newer revision) and cached.

    An audience this transaction wrote is answered from what it wrote and never cached: that
    revision is not committed yet.
    """
    ours: _Transaction | None = session.info.get(_TRANSACTION)
    written = None if ours is None else ours.pending.get(audience_id)
    if written is not None:
        _, at, members = written
        return members if at == revision else frozen(_read(session, audience_id)[1])
    hit = cache.get((audience_id, revision))
    if hit is not None:
        return hit
    head, loaded = _read(session, audience_id)
    return cache.put((audience_id, head), loaded)


def _read(session: Session, audience_id: str) -> tuple[int, BitMap]:
    """The stored (revision, members) of an audience: its base with its deltas applied.

    Base and deltas come from one statement, so they are of one snapshot even under READ
    COMMITTED, where a fold committing between two statements would lose deltas.
    """
    base = select(
        literal_column("0", Integer).label("kind"),
        MembershipRow.base_revision.label("revision"),
        MembershipRow.revision.label("head"),
        MembershipRow.bitmap.label("entered"),
        cast(null(), LargeBinary).label("exited"),
    ).where(MembershipRow.audience_id == audience_id)
    deltas = select(
        literal_column("1", Integer),
        MembershipDeltaRow.revision,
        cast(null(), Integer),
        MembershipDeltaRow.entered,
        MembershipDeltaRow.exited,
    ).where(MembershipDeltaRow.audience_id == audience_id)
    both = union_all(base, deltas).subquery()
    rows = session.execute(select(both).order_by(both.c.kind, both.c.revision)).all()
    if not rows or rows[0].kind != 0:
        return 0, BitMap()
    _, at, head, blob, _ = rows[0]
    members = BitMap() if blob is None else deserialize(blob)
    for _, revision, _, entered, exited in rows[1:]:
        at += 1
        if revision != at:
            raise RuntimeError(f"membership of {audience_id} lacks the delta of revision {at}")
        members |= deserialize(entered)
        members -= deserialize(exited)
    if at != head:
        raise RuntimeError(f"membership of {audience_id} stops at revision {at}, not {head}")
    return head, members


@dataclass
class _Transaction:
    """What this session's current transaction holds: the state rows it locked, per
    audience the members it wrote last (for the cache once committed), and per workspace the
    destinations its changes go to (read once) and those it woke."""

    locked: dict[str, MembershipRow] = field(default_factory=dict)
    pending: dict[str, tuple[BitmapCache | None, int, FrozenBitMap]] = field(default_factory=dict)
    subscribers: dict[str, list[outbox.Subscriber]] = field(default_factory=dict)
    woken: set[str] = field(default_factory=set)


def _transaction(session: Session) -> _Transaction:
    found: _Transaction | None = session.info.get(_TRANSACTION)
    if found is None:
        found = session.info[_TRANSACTION] = _Transaction()
        event.listen(session, "after_commit", _fill_after_commit)
        event.listen(session, "after_soft_rollback", _forget)
        event.listen(session, "after_transaction_end", _end)
    return found


def _fill_after_commit(session: Session) -> None:
    # Only now is each revision what the store holds: before the commit it could still roll
    # back, and its number would be reused by the next writer with other members.
    done: _Transaction = session.info[_TRANSACTION]
    for audience_id, (cache, revision, members) in done.pending.items():
        if cache is not None:
            cache.put((audience_id, revision), members)
    session.info[_TRANSACTION] = _Transaction()


def _forget(session: Session, _previous: SessionTransaction) -> None:
    # Any rollback, a savepoint's included, may undo a pending revision or release a lock:
    # keep none of them.
    session.info[_TRANSACTION] = _Transaction()


def _end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # the session's transaction, however it ended (close too)
        session.info[_TRANSACTION] = _Transaction()
