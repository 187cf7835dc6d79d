"""The read cache: expiry, generations that refuse values read before an invalidation, and
commit hooks that drop what a transaction changed."""

from __future__ import annotations

from fastapi import FastAPI
from hypothesis import given
from hypothesis import strategies as st

from audiences.store.read_cache import ExpiringMap, ReadCache
from tests.factories import Tenant, make_audience


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_entries_expire_after_their_ttl() -> None:
    clock = FakeClock()
    cache: ExpiringMap[str] = ExpiringMap(2.0, clock)
    cache.put("a", "value", cache.generation)
    clock.now = 1.9
    assert cache.get("a") == "value"
    clock.now = 2.1
    assert cache.get("a") is None


def test_a_value_read_before_an_invalidation_is_not_kept() -> None:
    cache: ExpiringMap[str] = ExpiringMap(10.0)
    before = cache.generation
    cache.discard({"other"})
    cache.put("a", "read before the change", before)
    assert cache.get("a") is None
    cache.put("a", "read after", cache.generation)
    assert cache.get("a") == "read after"


def test_a_zero_ttl_keeps_nothing() -> None:
    cache: ExpiringMap[str] = ExpiringMap(0)
    cache.put("a", "value", cache.generation)
    assert cache.get("a") is None


@given(st.lists(st.tuples(st.sampled_from("abc"), st.booleans()), max_size=30))
def test_discarding_a_key_never_leaves_it_readable(steps: list[tuple[str, bool]]) -> None:
    cache: ExpiringMap[int] = ExpiringMap(60.0)
    live: dict[str, int] = {}
    for n, (key, put) in enumerate(steps):
        if put:
            cache.put(key, n, cache.generation)
            live[key] = n
        else:
            cache.discard({key})
            live.pop(key, None)
        for name in "abc":
            assert cache.get(name) == live.get(name)


def test_a_commit_that_changes_an_audience_drops_its_entries(app: FastAPI, tenant: Tenant) -> None:
    reads: ReadCache = app.state.runtime.reads
    audience = make_audience(tenant.write, kind="static")
    # Warm the entries through a read, then rename the audience: the commit drops them.
    stored = tenant.write.put("/v1/profiles/p1", json={"attributes": {}})
    assert stored.status_code in (200, 201), stored.text
    assert tenant.read.get("/v1/profiles/p1/audiences").status_code == 200
    assert reads.workspaces.get(tenant.workspace_id) is not None
    renamed = tenant.write.patch(
        f"/v1/audiences/{audience['id']}",
        json={"name": "renamed"},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert renamed.status_code == 200, renamed.text
    assert reads.workspaces.get(tenant.workspace_id) is None


def test_revise_changes_live_entries_only_and_refuses_older_reads() -> None:
    cache: ExpiringMap[int] = ExpiringMap(60.0)
    cache.put("a", 1, cache.generation)
    before = cache.generation
    cache.revise({"a": lambda value: value + 10, "absent": lambda value: value + 10})
    assert cache.get("a") == 11
    assert cache.get("absent") is None
    cache.put("b", 1, before)  # read before the revision: refused
    assert cache.get("b") is None


def test_a_membership_commit_installs_its_revision(app: FastAPI, tenant: Tenant) -> None:
    reads: ReadCache = app.state.runtime.reads
    pro = make_audience(
        tenant.write, name="pro", rule="plan = 'pro'", refresh_policy={"mode": "streaming"}
    )
    stored = tenant.write.put("/v1/profiles/p1", json={"attributes": {"plan": "pro"}})
    assert stored.status_code in (200, 201), stored.text
    member = f"/v1/audiences/{pro['id']}/members/p1"
    assert tenant.read.get(member).json()["member"] is True
    assert tenant.read.get("/v1/profiles/p1/audiences").status_code == 200
    state = reads.audiences.get(pro["id"])
    assert state is not None
    # A streaming write moves the membership on: the entries stay, at the new revision.
    moved = tenant.write.put("/v1/profiles/p1", json={"attributes": {"plan": "free"}})
    assert moved.status_code == 200, moved.text
    after = reads.audiences.get(pro["id"])
    assert after is not None and after.revision > state.revision
    listing = reads.workspaces.get(tenant.workspace_id)
    assert listing is not None
    assert [s.revision for s in listing if s.id == pro["id"]] == [after.revision]
    assert tenant.read.get(member).json()["member"] is False
    assert tenant.read.get("/v1/profiles/p1/audiences").json()["audiences"] == []


def test_an_older_revision_never_replaces_a_newer_one() -> None:
    from datetime import UTC, datetime

    from audiences.store.read_cache import AudienceState, _advanced, _Revision

    now = datetime.now(UTC)
    state = AudienceState("a", "w", "k", "n", revision=7, computed_at=now)
    older = {"a": _Revision("w", 6, None)}
    newer = {"a": _Revision("w", 8, None)}
    assert _advanced(older, state) is state
    assert _advanced(newer, state).revision == 8
