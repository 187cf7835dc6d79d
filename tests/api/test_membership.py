"""Membership through the API, every answer checked against hand-written DuckDB SQL (tests/oracle).

A workspace gets the demo generator's profiles (with NULLs sprinkled in); every dynamic demo
audience and a few more rules (dates, NULL logic, negations, a JSON-form rule) are evaluated in
batch, by streaming writes and after deletions, and each member set, count, change feed,
snapshot, export, preview and verdict is compared with what the oracle computes.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audiences.cli.demo import AUDIENCES
from tests.api.test_behaviour_membership import BEHAVIOUR_SQL
from tests.factories import Tenant, make_audience
from tests.oracle import (
    DEMO_TYPES,
    Oracle,
    declare,
    demo_records,
    exported,
    ingest,
    members,
    pages,
    reference_time,
    refresh,
    to_json,
)

PROFILES = 1_500
SMALL = 400
"""Profiles in the worlds of the tests that check one behaviour rather than every example."""

ORACLE_SQL = {
    "us-pro-over-30": "country = 'US' AND age >= 30 AND plan = 'pro'",
    "paying-teams": "plan = 'team' OR plan = 'enterprise'",
    "churned": "churned",
    "vip": "list_position(tags, 'vip') IS NOT NULL",
    "vip-not-churned": "list_position(tags, 'vip') IS NOT NULL AND churned IS NOT TRUE",
    "recently-active": "last_seen > NOW - INTERVAL 30 DAY",
    "vip-at-risk": "list_position(tags, 'vip') IS NOT NULL AND last_seen < NOW - INTERVAL 14 DAY",
    "high-value": "lifetime_value >= 1000",
    "europe": "country = 'DE' OR country = 'FR' OR country = 'GB'",
    "acme-staff": "suffix(email, '@acme.com')",
}
"""For each dynamic demo audience, its rule written by hand as plain DuckDB SQL."""

EXTRA: list[tuple[str, str | dict[str, Any], str]] = [
    ("not-churned", "NOT churned", "churned = false"),
    (
        "churn-unknown",
        "churned IS NULL",
        "id NOT IN (SELECT id FROM profiles WHERE churned IN (true, false))",
    ),
    ("young-or-ageless", "age < 25 OR age IS NULL", "coalesce(age, 0) < 25"),
    (
        "class-of-2023",
        "signup_date BETWEEN DATE '2023-01-01' AND DATE '2023-12-31'",
        "year(signup_date) = 2023",
    ),
    (
        "neither-us-nor-free",
        "NOT (country = 'US' OR plan = 'free')",
        "country <> 'US' AND plan <> 'free'",
    ),
    (
        "beta-no-mobile",
        "list_contains(tags, 'beta') AND NOT list_contains(tags, 'mobile')",
        "list_position(tags, 'beta') > 0 AND list_position(tags, 'mobile') IS NULL",
    ),
    (
        "seniors-json",
        {
            "all": [
                {"field": "age", "op": "gte", "value": 60},
                {"none": [{"field": "churned", "op": "is_true"}]},
            ]
        },
        "age >= 60 AND churned = false",
    ),
    (
        "mail-test-or-ilike",
        "email ILIKE '%@MAIL.TEST' OR plan NOT IN ('free', 'pro', 'team')",
        "suffix(lower(email), '@mail.test') OR plan = 'enterprise'",
    ),
    (
        "europe-vips",
        "in_audience('europe') AND in_audience('vip')",
        "country IN ('DE', 'FR', 'GB') AND list_position(tags, 'vip') IS NOT NULL",
    ),
]
"""Rules beyond the demo's, each with its hand-written SQL: dates, NULLs, negation, JSON form."""


@dataclass
class Example:
    """One audience under test: its rule, the oracle's SQL, and (once created) its id."""

    key: str
    rule: str | dict[str, Any]
    sql: str
    id: str = ""
    clock: bool = field(init=False)

    def __post_init__(self) -> None:
        self.clock = "NOW" in self.sql


def examples() -> list[Example]:
    """Every dynamic demo audience, then the extras; dependencies come before their readers."""
    demo = [
        Example(fields["key"], fields["rule"], ORACLE_SQL[fields["key"]])
        for _, fields in AUDIENCES
        if fields["kind"] == "dynamic" and fields["key"] in ORACLE_SQL
    ]
    return demo + [Example(key, rule, sql) for key, rule, sql in EXTRA]


@dataclass
class World:
    """A tenant holding the demo profiles, the oracle's copy of them, and the example audiences."""

    tenant: Tenant
    oracle: Oracle
    anchor: datetime
    audiences: dict[str, Example]

    def create(self, *, streaming: bool) -> None:
        """Create every example audience (streaming where the rule can stream, if asked)."""
        for example in self.audiences.values():
            mode = "streaming" if streaming and not example.clock else "manual"
            body = {
                "key": example.key,
                "name": example.key,
                "kind": "dynamic",
                "rule": example.rule,
                "refresh_policy": {"mode": mode},
            }
            response = self.tenant.write.post("/v1/audiences", json=body)
            assert response.status_code == 201, response.text
            example.id = response.json()["id"]

    def refresh_all(self) -> dict[str, dict[str, Any]]:
        """Refresh every audience in dependency order; the runs by key."""
        return {key: refresh(self.tenant.write, a.id) for key, a in self.audiences.items()}

    def expected(self, example: Example, run: dict[str, Any] | None = None) -> set[str]:
        """What the oracle says the audience holds (clock rules: as of the run's reference time)."""
        return self.oracle.select(example.sql, now=reference_time(run) if run else None)


def test_every_demo_audience_has_an_oracle() -> None:
    dynamic = {fields["key"] for _, fields in AUDIENCES if fields["kind"] == "dynamic"}
    assert dynamic == set(ORACLE_SQL) | set(BEHAVIOUR_SQL)


def _world(tenant: Tenant, count: int) -> World:
    declare(tenant.admin, DEMO_TYPES)
    anchor = datetime.now(UTC).replace(microsecond=0)
    oracle = Oracle(DEMO_TYPES)
    ingest(tenant.write, oracle, demo_records(count, anchor=anchor))
    return World(tenant, oracle, anchor, {e.key: e for e in examples()})


@pytest.fixture
def world(tenant: Tenant) -> World:
    """The demo profiles ingested into a fresh tenant (attributes declared first)."""
    return _world(tenant, PROFILES)


@pytest.fixture
def small(tenant: Tenant) -> World:
    """A world of a few hundred profiles."""
    return _world(tenant, SMALL)


def _shuffle_attributes(world: World, seed: int, count: int) -> list[tuple[str, dict[str, Any]]]:
    """Random changes to ``count`` profiles that move them in and out of every example."""
    rng = random.Random(seed)
    ids = sorted(world.oracle.records)
    changes = []
    for external_id in rng.sample(ids, count):
        change: dict[str, Any] = {}
        for name, values in {
            "country": ["US", "DE", "FR", "BR", None],
            "plan": ["free", "pro", "team", "enterprise"],
            "churned": [True, False, None],
            "age": [19, 24, 30, 45, 61, 79, None],
            "tags": [["vip"], ["beta"], ["vip", "beta"], ["beta", "mobile"], [], None],
            "email": [f"{external_id}@acme.com", f"{external_id}@Mail.Test", None],
            "lifetime_value": [5.0, 999.99, 1000.0, 2500.5, None],
            "signup_date": [date(2022, 12, 31), date(2023, 1, 1), date(2023, 12, 31), None],
        }.items():
            if rng.random() < 0.5:
                change[name] = rng.choice(values)
        change["last_seen"] = world.anchor - timedelta(days=rng.choice([1, 10, 20, 40, 90]))
        changes.append((external_id, change))
    return changes


def test_batch_runs_equal_the_oracle_then_follow_changes(world: World) -> None:
    client = world.tenant.read
    world.create(streaming=False)
    first = world.refresh_all()
    before: dict[str, set[str]] = {}
    for key, example in world.audiences.items():
        run = first[key]
        expected = world.expected(example, run)
        assert 0 < len(expected) < PROFILES, f"{key} should split the profiles"
        assert run["status"] == "succeeded", run
        assert (run["number"], run["size"], run["entered"], run["exited"]) == (
            1,
            len(expected),
            len(expected),
            0,
        )
        listed = members(client, example.id)
        assert len(listed) == len(set(listed))
        assert set(listed) == expected, key
        audience = client.get(f"/v1/audiences/{example.id}").json()
        assert audience["size"] == len(expected)
        assert audience["evaluation"]["status"] == "succeeded"
        assert audience["evaluation"]["last_run_id"] == run["id"]
        assert audience["evaluation"]["computed_at"] is not None
        before[key] = expected

    changed = _shuffle_attributes(world, seed=1, count=400)
    ingest(world.tenant.write, world.oracle, changed)
    for key, example in world.audiences.items():
        assert set(members(client, example.id)) == before[key], "manual audiences wait for a run"

    second = world.refresh_all()
    for key, example in world.audiences.items():
        run, after = second[key], world.expected(example, second[key])
        entered, exited = after - before[key], before[key] - after
        assert entered or exited, f"{key}: the changes should move someone"
        assert (key, run["number"], run["size"], run["entered"], run["exited"]) == (
            key,
            2,
            len(after),
            len(entered),
            len(exited),
        )
        assert set(members(client, example.id)) == after
        assert set(members(client, example.id, as_of=first[key]["id"])) == before[key]
        feed = list(pages(client, f"/v1/audiences/{example.id}/changes", since=first[key]["id"]))
        assert (feed[0]["entered"], feed[0]["exited"]) == (len(entered), len(exited))
        moved = [item for page in feed for item in page["data"]]
        assert {i["id"] for i in moved if i["change"] == "entered"} == entered
        assert {i["id"] for i in moved if i["change"] == "exited"} == exited
        assert len(moved) == len(entered) + len(exited)


def test_streaming_writes_keep_streaming_audiences_equal_to_the_oracle(world: World) -> None:
    client = world.tenant.read
    world.create(streaming=True)
    world.refresh_all()
    streaming = [e for e in world.audiences.values() if not e.clock]
    modes = {e.key: client.get(f"/v1/audiences/{e.id}").json() for e in streaming}
    assert all(m["evaluation_mode"]["mode"] == "streaming" for m in modes.values())

    def check() -> None:
        for example in streaming:
            assert set(exported(client, example.id)) == world.expected(example), example.key

    check()
    # One profile at a time: into vip (and vip-not-churned), then churned (out of it again).
    target = next(i for i, a in sorted(world.oracle.records.items()) if not a.get("tags"))
    for change in [{"tags": ["vip"], "churned": False}, {"churned": True}, {"churned": None}]:
        response = world.tenant.write.put(
            f"/v1/profiles/{target}", json={"attributes": to_json(change)}
        )
        assert response.status_code == 200, response.text
        world.oracle.write(target, change)
        check()
    vip_not_churned = world.audiences["vip-not-churned"].id
    assert target in members(client, vip_not_churned)
    # A new profile enters at once; batches move hundreds in and out.
    newcomer = {"country": "DE", "plan": "team", "tags": ["vip"], "age": 61, "churned": False}
    created = world.tenant.write.put("/v1/profiles/new-1", json={"attributes": newcomer})
    assert created.status_code == 201
    world.oracle.write("new-1", newcomer)
    check()
    for seed in (2, 3):
        ingest(world.tenant.write, world.oracle, _shuffle_attributes(world, seed, 300))
        check()


def test_deleting_a_profile_removes_it_everywhere_and_from_kept_runs(world: World) -> None:
    client = world.tenant.read
    world.create(streaming=True)
    first = world.refresh_all()
    ingest(world.tenant.write, world.oracle, _shuffle_attributes(world, seed=4, count=200))
    world.refresh_all()
    vip = world.audiences["vip"]
    gone = [*sorted(world.expected(vip))[:3], sorted(world.oracle.select("churned"))[0]]
    for external_id in gone:
        assert client.get(f"/v1/profiles/{external_id}/audiences").json()["audiences"]
        assert world.tenant.write.delete(f"/v1/profiles/{external_id}").status_code == 204
        world.oracle.delete(external_id)
        assert client.get(f"/v1/profiles/{external_id}").status_code == 404
        assert client.get(f"/v1/profiles/{external_id}/audiences").status_code == 404
        assert world.tenant.write.delete(f"/v1/profiles/{external_id}").status_code == 404
    for example in world.audiences.values():
        run = first[example.key]
        now = set(members(client, example.id))
        then = set(members(client, example.id, as_of=run["id"]))
        assert not now & set(gone)
        assert not then & set(gone)
        if not example.clock:
            assert now == world.expected(example)
        assert sorted(exported(client, example.id)) == sorted(now)
        changed = list(pages(client, f"/v1/audiences/{example.id}/changes", since=run["id"]))
        assert not {item["id"] for page in changed for item in page["data"]} & set(gone)
    # The same id again is a new profile: in no kept run, and in the live audiences it fits.
    again = {"tags": ["vip"], "country": "FR", "churned": False}
    assert (
        world.tenant.write.put(f"/v1/profiles/{gone[0]}", json={"attributes": again}).status_code
        == 201
    )
    world.oracle.write(gone[0], again)
    assert gone[0] in members(client, vip.id)
    assert gone[0] not in members(client, vip.id, as_of=first["vip"]["id"])
    after = world.refresh_all()
    for example in world.audiences.values():
        assert set(exported(client, example.id)) == world.expected(example, after[example.key])


def test_member_answers_explain_and_profile_audiences_agree(world: World) -> None:
    client = world.tenant.read
    world.create(streaming=False)
    runs = world.refresh_all()
    expected = {key: world.expected(e, runs[key]) for key, e in world.audiences.items()}
    sample = sorted(world.oracle.records)[::97]
    for external_id in sample:
        listed = client.get(f"/v1/profiles/{external_id}/audiences").json()
        assert listed["profile_id"] == external_id
        assert {a["key"] for a in listed["audiences"]} == {
            key for key, ids in expected.items() if external_id in ids
        }
        assert all(a["computed_at"] for a in listed["audiences"])
        for key in ("vip-not-churned", "not-churned", "seniors-json"):
            example = world.audiences[key]
            answer = client.get(f"/v1/audiences/{example.id}/members/{external_id}").json()
            assert answer["member"] is (external_id in expected[key])
            assert answer["computed_at"] is not None
            assert "explanation" not in answer


def test_explain_shows_each_nodes_value_and_the_attributes_seen(small: World) -> None:
    world = small
    world.create(streaming=False)
    world.refresh_all()
    example = world.audiences["not-churned"]
    unknown = next(i for i, a in sorted(world.oracle.records.items()) if "churned" not in a)
    answer = world.tenant.read.get(
        f"/v1/audiences/{example.id}/members/{unknown}", params={"explain": "true"}
    ).json()
    assert answer["member"] is False
    explanation = answer["explanation"]
    assert (explanation["member"], explanation["value"]) == (False, None)
    assert explanation["attributes"] == {"churned": None}
    assert explanation["tree"]["children"][0] == {
        "text": "churned",
        "value": None,
        "attribute": "churned",
    }
    us_pro = world.audiences["us-pro-over-30"]
    member = sorted(world.expected(us_pro))[0]
    stored = world.oracle.records[member]
    answer = world.tenant.read.get(
        f"/v1/audiences/{us_pro.id}/members/{member}", params={"explain": "true"}
    ).json()
    assert answer["member"] is True
    tree = answer["explanation"]["tree"]
    assert tree["value"] is True
    assert [child["value"] for child in tree["children"]] == [True, True, True]
    assert answer["explanation"]["attributes"] == {
        "country": "US",
        "age": stored["age"],
        "plan": "pro",
    }
    composite = world.audiences["vip-not-churned"]
    outsider = sorted(set(world.oracle.records) - world.expected(composite))[0]
    why = world.tenant.read.get(
        f"/v1/audiences/{composite.id}/members/{outsider}", params={"explain": "true"}
    ).json()
    assert why["member"] is False
    assert why["explanation"]["value"] is False


def _far_from_clock_boundaries(world: World, external_id: str, at: datetime) -> bool:
    seen = world.oracle.records[external_id].get("last_seen")
    bounds = [at - timedelta(days=30), at - timedelta(days=14)]
    return seen is None or all(abs(seen - bound) > timedelta(hours=1) for bound in bounds)


def test_synchronous_evaluation_agrees_with_batch_membership(world: World) -> None:
    world.create(streaming=False)
    runs = world.refresh_all()
    at = reference_time(runs["recently-active"])
    expected = {key: world.expected(e, runs[key]) for key, e in world.audiences.items()}
    ids = [
        i for i in sorted(world.oracle.records)[::41] if _far_from_clock_boundaries(world, i, at)
    ]
    assert len(ids) > 30
    for external_id in ids:
        response = world.tenant.read.post(
            "/v1/evaluate", json={"profile_id": external_id, "explain": False}
        )
        assert response.status_code == 200, response.text
        verdicts = {v["key"]: v["member"] for v in response.json()["audiences"]}
        assert verdicts == {key: external_id in found for key, found in expected.items()}
    # Attributes override the stored profile; the result matches the oracle on the merged record.
    stored = ids[0]
    override = {"country": "DE", "tags": ["vip"], "churned": None, "age": 70}
    verdicts = _evaluate(world, {"profile_id": stored, "attributes": to_json(override)})
    merged = Oracle(DEMO_TYPES)
    merged.write(stored, {**world.oracle.records[stored], **override})
    assert verdicts == _expected_for(world, merged, stored, datetime.now(UTC))
    # Nothing was stored: the profile reads as before.
    shown = world.tenant.read.get(f"/v1/profiles/{stored}").json()["attributes"]
    assert shown == to_json(world.oracle.records[stored]) | {
        "last_seen": world.oracle.records[stored]["last_seen"].isoformat().replace("+00:00", "Z")
    }
    # A profile that is not stored is evaluated on its attributes alone.
    # Sent as JSON, a timestamp is ISO text: it is read as the timestamp an upsert would store.
    seen = datetime.now(UTC) - timedelta(days=3)
    alone = {
        "country": "FR",
        "plan": "team",
        "tags": ["vip", "beta"],
        "age": 64,
        "churned": False,
        "last_seen": seen,
    }
    single = Oracle(DEMO_TYPES)
    single.write("visitor", alone)
    verdicts = _evaluate(world, {"attributes": to_json(alone)})
    assert verdicts == _expected_for(world, single, "visitor", datetime.now(UTC))
    assert world.tenant.read.get("/v1/profiles/visitor").status_code == 404
    unknown = world.tenant.read.post("/v1/evaluate", json={"profile_id": "nobody"})
    assert unknown.status_code == 404


@pytest.mark.parametrize(
    "attributes",
    [{"age": "old"}, {"last_seen": "yesterday"}, {"tags": "vip"}, {"age": 1.5, "churned": "no"}],
)
def test_evaluating_values_that_contradict_the_schema_is_refused(
    world: World, attributes: dict[str, Any]
) -> None:
    world.create(streaming=False)
    response = world.tenant.read.post("/v1/evaluate", json={"attributes": attributes})
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "profile_invalid"
    named = {field for error in problem["errors"] for field in error["location"]}
    assert set(attributes) <= named


def _evaluate(world: World, body: dict[str, Any]) -> dict[str, bool]:
    response = world.tenant.read.post("/v1/evaluate", json=body)
    assert response.status_code == 200, response.text
    explained = response.json()["audiences"]
    assert all(v["explanation"]["member"] is v["member"] for v in explained)
    return {v["key"]: v["member"] for v in explained}


def _expected_for(world: World, oracle: Oracle, external_id: str, now: datetime) -> dict[str, bool]:
    return {
        key: external_id in oracle.select(example.sql, now=now)
        for key, example in world.audiences.items()
    }


def test_export_streams_the_members_as_csv_and_ndjson(small: World) -> None:
    world = small
    world.create(streaming=False)
    runs = world.refresh_all()
    example = world.audiences["europe"]
    listed = members(world.tenant.read, example.id)
    assert set(listed) == world.expected(example, runs["europe"])
    url = f"/v1/audiences/{example.id}/export"
    as_csv = world.tenant.read.get(url)
    assert as_csv.status_code == 200
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert as_csv.headers["x-computed-at"]
    rows = list(csv.reader(io.StringIO(as_csv.text)))
    assert rows[0] == ["id"]
    assert [row[0] for row in rows[1:]] == listed
    as_ndjson = world.tenant.read.get(url, params={"format": "ndjson"})
    assert as_ndjson.headers["content-type"].startswith("application/x-ndjson")
    assert [json.loads(line)["id"] for line in as_ndjson.text.splitlines()] == listed
    assert world.tenant.read.get(url, params={"format": "xml"}).status_code == 422


def test_runs_are_listed_newest_first_and_fetched_by_id(small: World) -> None:
    world = small
    world.create(streaming=False)
    example = world.audiences["high-value"]
    made = [refresh(world.tenant.write, example.id) for _ in range(3)]
    url = f"/v1/audiences/{example.id}/runs"
    listed = world.tenant.read.get(url).json()
    assert [run["id"] for run in listed["data"]] == [run["id"] for run in reversed(made)]
    assert listed["total"] == 3
    assert [run["number"] for run in listed["data"]] == [3, 2, 1]
    assert all(run["trigger"] == "manual" for run in listed["data"])
    assert [r["entered"] for r in reversed(listed["data"])] == [made[0]["size"], 0, 0]
    one = world.tenant.read.get(f"{url}/{made[1]['id']}")
    assert one.status_code == 200
    assert one.json() == made[1]
    assert world.tenant.read.get(f"{url}/no-such-run").status_code == 404
    assert world.tenant.read.get(f"{url}?limit=1").json()["has_more"] is True
    location = world.tenant.write.post(f"/v1/audiences/{example.id}/refresh").headers["location"]
    assert world.tenant.read.get(location).json()["number"] == 4


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(limits=st.lists(st.integers(min_value=1, max_value=200), min_size=1, max_size=40))
def test_member_pages_hold_every_member_exactly_once(
    paged_world: tuple[World, set[str]], limits: list[int]
) -> None:
    world, expected = paged_world
    example = world.audiences["not-churned"]
    url = f"/v1/audiences/{example.id}/members"
    seen: list[str] = []
    cursor = None
    for step in range(10_000):
        params: dict[str, Any] = {"limit": limits[step % len(limits)]}
        if cursor:
            params["cursor"] = cursor
        page = world.tenant.read.get(url, params=params).json()
        assert page["total"] == len(expected)
        assert page["computed_at"] is not None
        assert len(page["data"]) <= params["limit"]
        seen += [item["id"] for item in page["data"]]
        cursor = page["next_cursor"]
        if not page["has_more"]:
            break
    assert len(seen) == len(set(seen)) == len(expected)
    assert set(seen) == expected
    assert seen == members(world.tenant.read, example.id)


@pytest.fixture
def paged_world(small: World) -> tuple[World, set[str]]:
    """A small world with ``not-churned`` evaluated once (shared by the examples)."""
    example = small.audiences["not-churned"]
    small.audiences = {"not-churned": example}
    small.create(streaming=False)
    run = refresh(small.tenant.write, example.id)
    return small, small.expected(example, run)


def test_cursors_belong_to_their_listing(small: World) -> None:
    world = small
    world.create(streaming=False)
    runs = world.refresh_all()
    example = world.audiences["vip"]
    url = f"/v1/audiences/{example.id}/members"
    page = world.tenant.read.get(url, params={"limit": 5}).json()
    wrong = world.tenant.read.get(
        url, params={"limit": 5, "cursor": page["next_cursor"], "as_of": runs["vip"]["id"]}
    )
    assert wrong.status_code == 400
    assert wrong.json()["code"] == "invalid_cursor"
    assert world.tenant.read.get(url, params={"cursor": "garbage"}).status_code == 400
    assert world.tenant.read.get(url, params={"limit": 201}).status_code == 422
    assert world.tenant.read.get(url, params={"as_of": "no-such-run"}).status_code == 404


def test_previews_equal_the_oracle_and_store_nothing(world: World) -> None:
    client = world.tenant.read
    for example in world.audiences.values():
        if example.clock or "in_audience" in json.dumps(example.rule):
            continue
        response = client.post("/v1/audiences/preview", json={"rule": example.rule, "sample": 7})
        assert response.status_code == 200, response.text
        preview = response.json()
        expected = world.expected(example)
        assert preview["size"] == len(expected), example.key
        assert len(preview["sample"]) == min(7, len(expected))
        assert set(preview["sample"]) <= expected
        assert preview["evaluation_mode"]["mode"] == "streaming"
        assert "entering" not in preview
    clocked = client.post(
        "/v1/audiences/preview", json={"rule": "last_seen > now() - INTERVAL 1 DAY"}
    ).json()
    assert clocked["evaluation_mode"]["mode"] == "scheduled"
    assert "now()" in clocked["evaluation_mode"]["reason"]
    assert client.get("/v1/audiences").json()["total"] == 0

    world.create(streaming=False)
    runs = world.refresh_all()
    europe = world.audiences["europe"]
    current = world.expected(europe, runs["europe"])
    proposed = "country IN ('DE', 'FR', 'BR')"
    wanted = world.oracle.select("country = 'DE' OR country = 'FR' OR country = 'BR'")
    response = client.post(
        f"/v1/audiences/{europe.id}/preview", json={"rule": proposed, "sample": 5}
    )
    assert response.status_code == 200, response.text
    preview = response.json()
    assert (preview["size"], preview["entering"], preview["exiting"]) == (
        len(wanted),
        len(wanted - current),
        len(current - wanted),
    )
    assert set(preview["entering_sample"]) <= wanted - current
    assert set(preview["exiting_sample"]) <= current - wanted
    assert len(preview["entering_sample"]) == 5
    assert set(members(client, europe.id)) == current, "a preview changes nothing"
    composite = world.audiences["europe-vips"]
    response = client.post(
        f"/v1/audiences/{composite.id}/preview",
        json={"rule": "in_audience('europe') AND NOT in_audience('vip')"},
    )
    assert response.json()["size"] == len(current - world.expected(world.audiences["vip"]))
    cycle = client.post(
        f"/v1/audiences/{europe.id}/preview", json={"rule": "in_audience('europe-vips')"}
    )
    assert cycle.status_code == 422
    assert cycle.json()["errors"][0]["code"] == "rule_cycle"


def test_a_rule_that_fails_on_the_engine_keeps_the_last_members(small: World) -> None:
    world = small
    client = world.tenant.write
    world.audiences = {"high-value": world.audiences["high-value"]}
    world.create(streaming=False)
    example = world.audiences["high-value"]
    good = refresh(client, example.id)
    expected = world.expected(example, good)
    # Valid rule text (numbers within 2^53), but the product overflows DuckDB's BIGINT.
    overflow = "age * 9007199254740992 * 1024 > lifetime_value"
    body = {"key": example.key, "name": "x", "kind": "dynamic", "rule": overflow}
    assert client.put(f"/v1/audiences/{example.id}", json=body).status_code == 200
    failed = refresh(client, example.id)
    assert failed["status"] == "failed"
    assert "out of range" in failed["error"]  # our words; the engine's message is logged
    assert (failed["size"], failed["members_kept"]) == (None, False)
    audience = client.get(f"/v1/audiences/{example.id}").json()
    assert audience["evaluation"]["status"] == "failed"
    assert audience["evaluation"]["last_error"] == failed["error"]
    assert audience["evaluation"]["last_run_id"] == failed["id"]
    assert audience["size"] == len(expected)
    assert set(members(client, example.id)) == expected
    as_of = client.get(f"/v1/audiences/{example.id}/members", params={"as_of": failed["id"]})
    assert as_of.status_code == 409
    assert as_of.json()["code"] == "run_expired"
    runs = client.get(f"/v1/audiences/{example.id}/runs", params={"status": "failed"}).json()
    assert [run["id"] for run in runs["data"]] == [failed["id"]]


def test_only_the_last_twenty_runs_keep_their_members(small: World) -> None:
    world = small
    world.audiences = {"europe": world.audiences["europe"]}
    world.create(streaming=False)
    example = world.audiences["europe"]
    made = [refresh(world.tenant.write, example.id) for _ in range(21)]
    url = f"/v1/audiences/{example.id}/members"
    oldest = world.tenant.read.get(url, params={"as_of": made[0]["id"]})
    assert oldest.status_code == 409
    assert oldest.json()["code"] == "run_expired"
    since = world.tenant.read.get(
        f"/v1/audiences/{example.id}/changes", params={"since": made[0]["id"]}
    )
    assert since.status_code == 409
    kept = world.tenant.read.get(url, params={"as_of": made[1]["id"], "limit": 1})
    assert kept.status_code == 200
    assert kept.json()["total"] == len(world.expected(example))
    runs = world.tenant.read.get(f"/v1/audiences/{example.id}/runs", params={"limit": 200}).json()
    assert [run["members_kept"] for run in runs["data"]] == [True] * 20 + [False]


def test_concurrent_refreshes_never_overlap(small: World) -> None:
    world = small
    world.audiences = {"vip": world.audiences["vip"]}
    world.create(streaming=False)
    url = f"/v1/audiences/{world.audiences['vip'].id}/refresh"
    for _ in range(2):  # the first batch races to create the membership state, too
        responses = world.tenant.write.gather([lambda c: c.post(url) for _ in range(4)])
        assert [r.status_code for r in responses] == [202] * 4, [r.text for r in responses]
    runs = world.tenant.read.get(url.replace("/refresh", "/runs")).json()["data"]
    ordered = sorted(runs, key=lambda run: run["number"])
    assert [run["number"] for run in ordered] == list(range(1, 9))
    for earlier, later in itertools.pairwise(ordered):
        finished = datetime.fromisoformat(earlier["finished_at"])
        assert finished <= datetime.fromisoformat(later["started_at"])
    assert [run["entered"] for run in ordered] == [len(world.expected(world.audiences["vip"]))] + [
        0
    ] * 7
    assert all(run["status"] == "succeeded" for run in ordered)


def test_unknown_audiences_and_profiles_answer_404(small: World) -> None:
    world = small
    client = world.tenant.write
    world.audiences = {"vip": world.audiences["vip"]}
    world.create(streaming=False)
    vip = world.audiences["vip"].id
    for method, url in [
        ("POST", "/v1/audiences/nope/refresh"),
        ("GET", "/v1/audiences/nope/runs"),
        ("GET", "/v1/audiences/nope/members"),
        ("GET", "/v1/audiences/nope/members/user-000001"),
        ("GET", "/v1/audiences/nope/export"),
        ("POST", "/v1/audiences/nope/preview"),
        ("GET", f"/v1/audiences/{vip}/members/nobody"),
        ("GET", f"/v1/audiences/{vip}/runs/nope"),
        ("GET", "/v1/profiles/nobody"),
        ("GET", "/v1/profiles/nobody/audiences"),
        ("DELETE", "/v1/profiles/nobody"),
    ]:
        body = {"rule": "age > 3"} if method == "POST" else None
        response = client.request(method, url, json=body)
        assert response.status_code == 404, (url, response.text)
        assert response.json()["code"].endswith("_not_found"), url
    changes = client.get(f"/v1/audiences/{vip}/changes", params={"since": "nope"})
    assert changes.status_code == 404


def test_other_kinds_cannot_be_refreshed(tenant: Tenant) -> None:
    # A static audience's refresh runs its expiry (tests/api/test_member_writes.py).
    static = tenant.write.post(
        "/v1/audiences",
        json={
            "key": "list",
            "name": "A list",
            "kind": "external",
            "source": {"type": "push", "name": "crm", "external_id": "list-1"},
        },
    ).json()
    response = tenant.write.post(f"/v1/audiences/{static['id']}/refresh")
    assert response.status_code == 409
    assert response.json()["code"] == "audience_not_evaluable"
    empty = tenant.read.get(f"/v1/audiences/{static['id']}/members").json()
    assert (empty["data"], empty["total"], empty["computed_at"]) == ([], 0, None)


def test_concurrent_writes_of_one_profile_leave_membership_as_the_data_says(
    tenant: Tenant,
) -> None:
    body = {"key": "churned", "name": "Churned", "kind": "dynamic", "rule": "churned"}
    body["refresh_policy"] = {"mode": "streaming"}
    churned = tenant.write.post("/v1/audiences", json=body).json()
    url = f"/v1/audiences/{churned['id']}/members/p"
    disagreements = []
    for _ in range(25):
        writes = [
            lambda c, value=value: c.put("/v1/profiles/p", json={"attributes": {"churned": value}})
            for value in (True, False, True, False)
        ]
        assert all(r.status_code in (200, 201) for r in tenant.write.gather(writes))
        stored = tenant.read.get("/v1/profiles/p").json()["attributes"]["churned"]
        if tenant.read.get(url).json()["member"] is not stored:
            disagreements.append(stored)
    assert disagreements == []


def test_changes_without_since_are_the_latest_runs_changes(tenant: Tenant) -> None:
    client = tenant.write
    audience = make_audience(client, rule="age > 30")
    url = f"/v1/audiences/{audience['id']}"
    empty = client.get(f"{url}/changes").json()
    assert (empty["data"], empty["since"], empty["run_id"]) == ([], None, None)

    def put(ages: dict[str, int]) -> None:
        records = [{"id": pid, "attributes": {"age": age}} for pid, age in ages.items()]
        assert client.post("/v1/profiles/batch", json={"profiles": records}).status_code == 200

    def refresh() -> str:
        response = client.post(f"{url}/refresh")
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    put({"p1": 40, "p2": 20})
    first = refresh()
    found = client.get(f"{url}/changes").json()
    assert found["data"] == [{"id": "p1", "change": "entered"}]
    assert (found["since"], found["run_id"], found["entered"]) == (None, first, 1)
    put({"p1": 20, "p2": 40, "p3": 50})
    second = refresh()
    page = client.get(f"{url}/changes", params={"limit": 1}).json()
    assert (page["since"], page["run_id"], page["entered"], page["exited"]) == (first, second, 2, 1)
    # A run between pages does not move the pages of the one the first page found.
    put({"p4": 60})
    refresh()
    seen = [*page["data"]]
    while page["has_more"]:
        page = client.get(
            f"{url}/changes", params={"limit": 1, "cursor": page["next_cursor"]}
        ).json()
        assert page["run_id"] == second
        seen.extend(page["data"])
    assert sorted((c["id"], c["change"]) for c in seen) == [
        ("p1", "exited"),
        ("p2", "entered"),
        ("p3", "entered"),
    ]
    since = client.get(f"{url}/changes", params={"since": first}).json()
    assert (since["since"], since["run_id"]) == (first, None)
