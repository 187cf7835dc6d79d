"""Audience membership state: members read through the bitmap cache, writes with a new revision."""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial

from pyroaring import AbstractBitMap, BitMap, FrozenBitMap
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from audiences.kit.clock import utcnow
from audiences.membership.bitmaps import Diff, deserialize, diff, serialize
from audiences.membership.cache import BitmapCache
from audiences.services.runtime import Runtime
from audiences.store.tables import AudienceRow, MembershipRow

EMPTY = FrozenBitMap()


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
    bitmap = runtime.bitmaps.get_or_load(
        (audience_id, state.revision), partial(_load, session, audience_id)
    )
    return bitmap, state


def cached(runtime: Runtime, audience_id: str, revision: int) -> FrozenBitMap | None:
    """The members at ``revision`` if this process holds them in memory (empty at 0)."""
    return EMPTY if revision == 0 else runtime.bitmaps.get((audience_id, revision))


def current(session: Session, *, runtime: Runtime, audience_id: str) -> FrozenBitMap:
    """The audience's members now (empty before its first evaluation)."""
    return many(session, runtime=runtime, audience_ids=[audience_id])[audience_id]


def many(
    session: Session, *, runtime: Runtime, audience_ids: Iterable[str]
) -> dict[str, FrozenBitMap]:
    """Current members of several audiences, by id; a blob is read only on a cache miss."""
    wanted = list(audience_ids)
    found: dict[str, FrozenBitMap] = dict.fromkeys(wanted, EMPTY)
    revisions = session.execute(
        select(MembershipRow.audience_id, MembershipRow.revision).where(
            MembershipRow.audience_id.in_(wanted), MembershipRow.revision > 0
        )
    ).all()
    for audience_id, revision in revisions:
        found[audience_id] = runtime.bitmaps.get_or_load(
            (audience_id, revision), partial(_load, session, audience_id)
        )
    return found


def replace(
    session: Session,
    *,
    audience: AudienceRow,
    members: AbstractBitMap,
    cache: BitmapCache | None = None,
) -> Diff:
    """Make ``members`` the audience's membership; returns who entered and who exited."""
    state = locked(session, audience)
    before = _members_of(state, cache)
    change = diff(before, members)
    _write(session, state, members)
    return change


def apply(
    session: Session,
    *,
    audience: AudienceRow,
    add: Iterable[int] = (),
    remove: Iterable[int] = (),
    cache: BitmapCache | None = None,
) -> Diff:
    """Add and remove single members (streaming writes, erasure); returns the effective change.

    With ``cache``, the current members come from it when it holds the locked revision, which
    spares reading and decoding the stored bitmap on every streaming write.
    """
    state = locked(session, audience)
    before = _members_of(state, cache)
    after = BitMap(before)
    after.update(BitMap(add))
    after.difference_update(BitMap(remove))
    change = diff(before, after)
    if change.entered or change.exited:
        _write(session, state, after)
    return change


def locked(session: Session, audience: AudienceRow) -> MembershipRow:
    """The audience's state row, created if missing, locked for this transaction.

    The row lock makes concurrent writers to one audience queue up on PostgreSQL instead of
    losing each other's changes; SQLite serialises writers already (BEGIN IMMEDIATE).
    """
    stmt = select(MembershipRow).where(MembershipRow.audience_id == audience.id).with_for_update()
    state: MembershipRow | None = session.scalars(stmt).one_or_none()
    if state is None:
        # Two first writers both find no row: a plain INSERT would fail one of them on the
        # primary key (PostgreSQL). ON CONFLICT DO NOTHING waits for the other's commit instead,
        # and the SELECT after it sees and locks that row.
        insert = (
            postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
        )
        session.execute(
            insert(MembershipRow)
            .values(audience_id=audience.id, workspace_id=audience.workspace_id, revision=0)
            .on_conflict_do_nothing(index_elements=["audience_id"])
        )
        state = session.scalars(stmt).one()
    return state


def _members_of(state: MembershipRow, cache: BitmapCache | None) -> AbstractBitMap:
    # A cached (audience, revision) is always what that revision committed: writers never fill
    # the cache, and the row lock held here keeps the revision from moving.
    if cache is not None and state.revision > 0:
        cached = cache.get((state.audience_id, state.revision))
        if cached is not None:
            return cached
    return BitMap() if state.bitmap is None else deserialize(state.bitmap)


def _load(session: Session, audience_id: str) -> BitMap:
    blob = session.scalar(
        select(MembershipRow.bitmap).where(MembershipRow.audience_id == audience_id)
    )
    return BitMap() if blob is None else deserialize(blob)


def _write(session: Session, state: MembershipRow, members: AbstractBitMap) -> None:
    state.bitmap = serialize(members)
    state.size = len(members)
    state.revision += 1
    state.computed_at = utcnow()
    session.flush()
    # Not cached here: the transaction may still roll back, and a revision number that never
    # committed would be reused by the next writer. Readers load it once after the commit.
