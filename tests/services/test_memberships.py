"""Membership storage: a base bitmap plus streaming deltas, folded past a threshold, cached
only once committed."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyroaring import BitMap
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from audiences.membership.bitmaps import Diff
from audiences.membership.cache import BitmapCache
from audiences.services import memberships
from audiences.services.runtime import Runtime
from audiences.store.db import make_engine, make_session_factory
from audiences.store.tables import AudienceRow, MembershipDeltaRow, MembershipRow
from tests.factories import Tenant, make_audience

pids = st.sets(st.integers(min_value=0, max_value=300), max_size=12)


@pytest.fixture
def factory(app: FastAPI) -> sessionmaker[Session]:
    """Sessions on the test session's (migrated) database."""
    made: sessionmaker[Session] = app.state.session_factory
    return made


@pytest.fixture
def audience_id(tenant: Tenant) -> str:
    """A fresh static audience's id (any kind stores members the same way)."""
    return str(make_audience(tenant.write, kind="static", name="deltas")["id"])


def apply(
    factory: sessionmaker[Session],
    audience_id: str,
    *,
    add: set[int] | None = None,
    remove: set[int] | None = None,
    cache: BitmapCache | None = None,
    fold: bool = False,
) -> Diff:
    """One committed ``memberships.apply``."""
    with factory.begin() as session:
        audience = session.get_one(AudienceRow, audience_id)
        return memberships.apply(
            session,
            audience=audience,
            add=add or set(),
            remove=remove or set(),
            cache=cache,
            fold=fold,
        )


def replace(
    factory: sessionmaker[Session], audience_id: str, members: set[int], cache: BitmapCache
) -> Diff:
    """One committed ``memberships.replace``."""
    with factory.begin() as session:
        audience = session.get_one(AudienceRow, audience_id)
        return memberships.replace(session, audience=audience, members=BitMap(members), cache=cache)


def stored(factory: sessionmaker[Session], audience_id: str) -> tuple[MembershipRow, int]:
    """The state row and how many deltas it has."""
    with factory() as session:
        state = session.get_one(MembershipRow, audience_id)
        count = session.scalar(
            select(func.count()).where(MembershipDeltaRow.audience_id == audience_id)
        )
        return state, count or 0


def base_bytes(factory: sessionmaker[Session], audience_id: str) -> bytes | None:
    """The stored base's bytes."""
    with factory() as session:
        query = select(MembershipRow.bitmap).where(MembershipRow.audience_id == audience_id)
        return session.scalar(query)


def cold_read(factory: sessionmaker[Session], audience_id: str) -> set[int]:
    """The members as read from the store alone (an empty cache, as after a restart)."""
    with factory() as session:
        state = session.get_one(MembershipRow, audience_id)
        return set(memberships.members_of(session, state, BitmapCache()))


def test_streaming_writes_append_deltas_and_fold_past_the_count(
    factory: sessionmaker[Session], audience_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(memberships, "FOLD_DELTAS", 3)
    for pid in range(3):
        apply(factory, audience_id, add={pid})
    state, deltas = stored(factory, audience_id)
    assert (state.revision, state.base_revision, deltas) == (3, 0, 3)
    assert state.delta_bytes > 0 and state.size == 3
    apply(factory, audience_id, add={3})
    state, deltas = stored(factory, audience_id)
    assert (state.revision, state.base_revision, deltas, state.delta_bytes) == (4, 4, 0, 0)
    apply(factory, audience_id, remove={0})
    state, deltas = stored(factory, audience_id)
    assert (state.revision, state.base_revision, deltas) == (5, 4, 1)
    assert cold_read(factory, audience_id) == {1, 2, 3}


def test_a_heavy_delta_folds_past_the_bytes(
    factory: sessionmaker[Session], audience_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(memberships, "FOLD_BYTES", 200)
    apply(factory, audience_id, add={1})
    assert stored(factory, audience_id)[1] == 1
    apply(factory, audience_id, add=set(range(10, 400, 3)))
    state, deltas = stored(factory, audience_id)
    assert (deltas, state.base_revision, state.revision) == (0, 2, 2)
    assert cold_read(factory, audience_id) == {1, *range(10, 400, 3)}


def test_a_write_that_changes_nothing_stores_nothing(
    factory: sessionmaker[Session], audience_id: str
) -> None:
    apply(factory, audience_id, add={1, 2})
    change = apply(factory, audience_id, add={1}, remove={5})
    assert (change.entered, change.exited) == (BitMap(), BitMap())
    state, deltas = stored(factory, audience_id)
    assert (state.revision, deltas) == (1, 1)


def test_replace_after_deltas_writes_a_base_and_drops_them(
    factory: sessionmaker[Session], audience_id: str
) -> None:
    cache = BitmapCache()
    apply(factory, audience_id, add={1, 2, 3}, cache=cache)
    apply(factory, audience_id, remove={2}, cache=cache)
    change = replace(factory, audience_id, {3, 4}, cache)
    assert (change.entered, change.exited) == (BitMap([4]), BitMap([1]))
    state, deltas = stored(factory, audience_id)
    assert (state.revision, state.base_revision, deltas, state.size) == (3, 3, 0, 2)
    assert cold_read(factory, audience_id) == {3, 4}
    apply(factory, audience_id, add={5}, cache=cache)
    assert cold_read(factory, audience_id) == {3, 4, 5}


def test_erasure_leaves_the_pid_in_no_delta(
    factory: sessionmaker[Session], audience_id: str
) -> None:
    apply(factory, audience_id, add={7, 8})
    apply(factory, audience_id, remove={7})
    apply(factory, audience_id, add={9})
    # 7 left already, yet the first delta still says it entered: erasure folds anyway.
    change = apply(factory, audience_id, remove={7}, fold=True)
    assert (change.entered, change.exited) == (BitMap(), BitMap())
    state, deltas = stored(factory, audience_id)
    assert (deltas, state.revision, state.base_revision) == (0, 3, 3)
    assert cold_read(factory, audience_id) == {8, 9}


def test_the_cache_holds_a_revision_only_once_committed(
    factory: sessionmaker[Session], audience_id: str
) -> None:
    cache = BitmapCache()
    apply(factory, audience_id, add={1}, cache=cache)
    assert cache.get((audience_id, 1)) == BitMap([1])
    with factory() as session, session.begin():
        audience = session.get_one(AudienceRow, audience_id)
        memberships.apply(session, audience=audience, add=[2], cache=cache)
        memberships.apply(session, audience=audience, add=[3], cache=cache)
        session.rollback()
    assert cache.get((audience_id, 2)) is None and cache.get((audience_id, 3)) is None
    apply(factory, audience_id, add={4}, cache=cache)
    assert cache.get((audience_id, 2)) == BitMap([1, 4])
    assert cold_read(factory, audience_id) == {1, 4}


def test_writes_in_one_transaction_build_on_each_other(
    factory: sessionmaker[Session], audience_id: str
) -> None:
    cache = BitmapCache()
    with factory.begin() as session:
        audience = session.get_one(AudienceRow, audience_id)
        memberships.apply(session, audience=audience, add=[1, 2], cache=cache)
        change = memberships.apply(session, audience=audience, add=[3], remove=[1], cache=cache)
        assert (change.entered, change.exited) == (BitMap([3]), BitMap([1]))
    assert cache.get((audience_id, 1)) is None
    assert cache.get((audience_id, 2)) == BitMap([2, 3])
    assert cold_read(factory, audience_id) == {2, 3}


def test_replace_with_the_same_members_keeps_the_stored_base(
    factory: sessionmaker[Session], audience_id: str
) -> None:
    """A batch run that finds the members it found last time moves the revision on (a new
    run, a new cache key) and keeps the stored base, which already holds them; one after
    streaming deltas writes a base again, since the stored one is older."""
    cache = BitmapCache()
    replace(factory, audience_id, {1, 2, 3}, cache)
    before, base = stored(factory, audience_id)[0], base_bytes(factory, audience_id)
    change = replace(factory, audience_id, {1, 2, 3}, cache)
    assert (change.entered, change.exited) == (BitMap(), BitMap())
    state, deltas = stored(factory, audience_id)
    assert (state.revision, state.base_revision, deltas, state.size) == (2, 2, 0, 3)
    assert base_bytes(factory, audience_id) == base
    assert state.members_changed_at == before.members_changed_at
    assert cold_read(factory, audience_id) == {1, 2, 3}
    apply(factory, audience_id, add={4}, cache=cache)
    apply(factory, audience_id, remove={4}, cache=cache)
    replace(factory, audience_id, {1, 2, 3}, cache)
    state, deltas = stored(factory, audience_id)
    assert (state.revision, state.base_revision, deltas, state.delta_bytes) == (5, 5, 0, 0)
    assert cold_read(factory, audience_id) == {1, 2, 3}


def test_a_restart_reads_base_and_deltas_back(
    factory: sessionmaker[Session], audience_id: str, database_url: str
) -> None:
    cache = BitmapCache()
    replace(factory, audience_id, {1, 2, 3}, cache)
    apply(factory, audience_id, add={10, 11}, cache=cache)
    apply(factory, audience_id, remove={2, 11}, cache=cache)
    engine = make_engine(database_url)
    try:
        restarted = make_session_factory(engine)
        assert cold_read(restarted, audience_id) == {1, 3, 10}
        apply(restarted, audience_id, add={12}, cache=BitmapCache())
    finally:
        engine.dispose()
    assert cold_read(factory, audience_id) == {1, 3, 10, 12}


Op = tuple[str, set[int], set[int]]
ops = st.lists(
    st.one_of(
        st.tuples(st.just("apply"), pids, pids),
        st.tuples(st.just("replace"), pids, st.just(set())),
        st.tuples(st.just("erase"), st.just(set()), pids),
    ),
    max_size=25,
)


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=ops, warm=st.booleans())
def test_base_and_deltas_equal_a_plain_set(
    factory: sessionmaker[Session],
    tenant: Tenant,
    monkeypatch: pytest.MonkeyPatch,
    ops: list[Op],
    warm: bool,
) -> None:
    monkeypatch.setattr(memberships, "FOLD_DELTAS", 4)
    audience_id = str(make_audience(tenant.write, kind="static", name="model")["id"])
    cache = BitmapCache() if warm else None
    truth: set[int] = set()
    for action, first, second in ops:
        if action == "replace":
            change = replace(factory, audience_id, first, cache or BitmapCache())
            expected = (first - truth, truth - first)
            truth = set(first)
        else:
            fold = action == "erase"
            change = apply(factory, audience_id, add=first, remove=second, cache=cache, fold=fold)
            after = (truth | first) - second
            expected = (after - truth, truth - after)
            truth = after
        assert (set(change.entered), set(change.exited)) == expected
        assert cold_read(factory, audience_id) == truth
    if ops:
        state, deltas = stored(factory, audience_id)
        assert (state.size or 0) == len(truth)
        assert deltas == state.revision - state.base_revision <= 4


def test_a_read_inside_the_writing_transaction_sees_the_write_and_caches_nothing(
    app: FastAPI, factory: sessionmaker[Session], audience_id: str
) -> None:
    cache = BitmapCache()
    runtime = Runtime(profiles=app.state.runtime.profiles, bitmaps=cache)
    apply(factory, audience_id, add={1}, cache=cache)
    with factory() as session, session.begin():
        audience = session.get_one(AudienceRow, audience_id)
        memberships.apply(session, audience=audience, add=[2], cache=cache)
        read = memberships.current(session, runtime=runtime, audience_id=audience_id)
        assert read == BitMap([1, 2])
        assert cache.get((audience_id, 2)) is None
        session.rollback()
    assert cache.get((audience_id, 2)) is None
    with factory() as session:
        assert memberships.current(session, runtime=runtime, audience_id=audience_id) == BitMap([1])
