"""Streaming behavioural audiences over HTTP: a profile enters before the event write that
qualifies it returns, attribute writes read the profile's events, ``POST /v1/evaluate`` and
a member's explanation read stored and given events (issue #13)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from fastapi import FastAPI

from tests.client import ApiClient
from tests.factories import Tenant, make_audience, run_jobs

SIGNED_UP = "count(*) FILTER (WHERE event = 'signup' AND timestamp >= now() - INTERVAL 1 DAY) >= 1"
SPENT = "sum(amount) FILTER (WHERE event = 'order' AND timestamp >= now() - INTERVAL 7 DAY) > 100"


def _streaming(client: ApiClient, rule: str) -> str:
    declared = client.put("/v1/event-properties/amount", json={"type": "float"})
    assert declared.status_code in (200, 201), declared.text
    body = make_audience(client, rule=rule, refresh_policy={"mode": "streaming"})
    assert body["evaluation_mode"]["mode"] == "streaming", body["evaluation_mode"]
    return str(body["id"])


def _member(client: ApiClient, audience_id: str, profile_id: str) -> bool:
    answer = client.get(f"/v1/audiences/{audience_id}/members/{profile_id}")
    assert answer.status_code == 200, answer.text
    return bool(answer.json()["member"])


def _ago(**delta: float) -> str:
    return (datetime.now(UTC) - timedelta(**delta)).isoformat()


def _order(profile_id: str, amount: float, **ago: float) -> dict[str, Any]:
    return {
        "profile_id": profile_id,
        "event": "order",
        "timestamp": _ago(**ago),
        "properties": {"amount": amount},
    }


def test_a_profile_enters_before_the_event_write_that_qualifies_it_returns(
    tenant: Tenant,
) -> None:
    signed = _streaming(tenant.admin, SIGNED_UP)
    old = {"profile_id": "late", "event": "signup", "timestamp": _ago(days=3)}
    assert tenant.write.post("/v1/events", json=old).status_code == 201
    assert not _member(tenant.read, signed, "late")  # outside the window
    fresh = {"profile_id": "late", "event": "signup", "timestamp": _ago(minutes=1)}
    assert tenant.write.post("/v1/events", json=fresh).status_code == 201
    assert _member(tenant.read, signed, "late")


def test_a_batch_of_events_moves_each_profile_once(tenant: Tenant) -> None:
    spent = _streaming(tenant.admin, SPENT)
    batch = [_order("a", 60, hours=1), _order("a", 50, hours=2), _order("b", 60, days=8)]
    batch += [_order("b", 60, hours=3), _order("c", 500, hours=1)]
    answer = tenant.write.post("/v1/events", json={"events": batch})
    assert answer.status_code == 201, answer.text
    assert {p: _member(tenant.read, spent, p) for p in "abc"} == {"a": True, "b": False, "c": True}


def test_attribute_writes_read_the_profiles_events(tenant: Tenant) -> None:
    rule = "count(*) FILTER (WHERE event = 'order') >= 1 AND country = 'US'"
    buyers = _streaming(tenant.admin, rule)
    assert tenant.write.post("/v1/events", json=_order("u", 10, hours=1)).status_code == 201
    assert not _member(tenant.read, buyers, "u")
    put = tenant.write.put("/v1/profiles/u", json={"attributes": {"country": "US"}})
    assert put.status_code in (200, 201), put.text
    assert _member(tenant.read, buyers, "u")
    batch = [{"id": "u", "attributes": {"country": "FR"}}]
    assert tenant.write.post("/v1/profiles/batch", json={"profiles": batch}).status_code == 200
    assert not _member(tenant.read, buyers, "u")


def _verdict(client: ApiClient, body: dict[str, Any], audience_id: str) -> dict[str, Any]:
    answer = client.post("/v1/evaluate", json=body)
    assert answer.status_code == 200, answer.text
    (verdict,) = [a for a in answer.json()["audiences"] if a["id"] == audience_id]
    return dict(verdict)


def _behaviour(tree: dict[str, Any]) -> dict[str, Any]:
    if "behaviour" in tree:
        return dict(tree["behaviour"])
    for child in tree.get("children", []):
        if found := _behaviour(child):
            return found
    return {}


def test_evaluate_reads_stored_events_and_those_given(tenant: Tenant) -> None:
    spent = _streaming(tenant.admin, SPENT)
    assert tenant.write.post("/v1/events", json=_order("s", 70, days=1)).status_code == 201
    stored = _verdict(tenant.read, {"profile_id": "s"}, spent)
    assert stored["member"] is False
    detail = _behaviour(stored["explanation"]["tree"])
    assert (detail["kind"], detail["value"], detail["total"]) == ("sum", 70.0, 1)
    assert detail["window"]["from_included"] is True
    given = [{"event": "order", "timestamp": _ago(hours=2), "properties": {"amount": 40}}]
    both = _verdict(tenant.read, {"profile_id": "s", "events": given}, spent)
    assert both["member"] is True
    detail = _behaviour(both["explanation"]["tree"])
    assert (detail["value"], detail["total"]) == (110.0, 2)
    assert [e["properties"]["amount"] for e in detail["events"]] == [40.0, 70.0]  # newest first
    alone = _verdict(tenant.read, {"events": given * 3}, spent)  # a profile not stored
    assert alone["member"] is True
    nothing = [{"event": "order", "properties": {"amount": 5, "note": "undeclared"}}]
    assert _verdict(tenant.read, {"events": nothing}, spent)["member"] is False
    bad = [{"event": "order", "properties": {"amount": "lots"}}]
    refused = tenant.read.post("/v1/evaluate", json={"events": bad})
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"][0]["location"][:2] == ["events", 0]
    too_many = tenant.read.post("/v1/evaluate", json={"events": given * 1001})
    assert too_many.status_code == 422


def test_a_members_explanation_reads_its_events(tenant: Tenant) -> None:
    spent = _streaming(tenant.admin, SPENT)
    batch = [_order("m", 80, days=2), _order("m", 30, hours=5)]
    assert tenant.write.post("/v1/events", json={"events": batch}).status_code == 201
    answer = tenant.read.get(f"/v1/audiences/{spent}/members/m", params={"explain": "true"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["member"] is True
    assert _behaviour(body["explanation"]["tree"])["value"] == 110.0


def test_an_event_import_moves_streaming_audiences(app: FastAPI, tenant: Tenant) -> None:
    spent = _streaming(tenant.admin, SPENT)
    lines = [
        {
            "profile_id": "i",
            "event": "order",
            "timestamp": _ago(hours=1),
            "properties": {"amount": 70},
        },
        {
            "profile_id": "i",
            "event": "order",
            "timestamp": _ago(hours=2),
            "properties": {"amount": 40},
        },
        {
            "profile_id": "j",
            "event": "order",
            "timestamp": _ago(hours=2),
            "properties": {"amount": 40},
        },
    ]
    accepted = tenant.write.post(
        "/v1/events/imports",
        content=b"\n".join(orjson.dumps(line) for line in lines),
        headers={"Content-Type": "application/x-ndjson"},
    )
    assert accepted.status_code == 202, accepted.text
    run_jobs(app, "events.import")
    assert tenant.read.get(f"/v1/jobs/{accepted.json()['id']}").json()["state"] == "succeeded"
    assert (_member(tenant.read, spent, "i"), _member(tenant.read, spent, "j")) == (True, False)


def test_a_profile_an_event_creates_is_evaluated_by_every_streaming_audience(
    tenant: Tenant,
) -> None:
    unknown = _streaming(tenant.admin, "age IS NULL")
    adults = _streaming(tenant.admin, "age >= 18")
    event = {"profile_id": "newcomer", "event": "view", "timestamp": _ago(minutes=1)}
    assert tenant.write.post("/v1/events", json=event).status_code == 201
    assert _member(tenant.read, unknown, "newcomer")
    assert not _member(tenant.read, adults, "newcomer")
    put = tenant.write.put("/v1/profiles/newcomer", json={"attributes": {"age": 30}})
    assert put.status_code in (200, 201), put.text
    assert tenant.write.post("/v1/events", json=event).status_code == 201
    assert (
        _member(tenant.read, unknown, "newcomer"),
        _member(tenant.read, adults, "newcomer"),
    ) == (
        False,
        True,
    )
