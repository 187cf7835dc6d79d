"""Events over HTTP: single and batch writes (201, 200 for duplicates, 207 with a result per
refused event), every bad input with its code and nothing half-written, a profile's events
paged newest first, the event property schema and names, erasure and retention settings."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI

from audiences.schemas.api_keys import Role
from tests.client import ApiClient
from tests.factories import Tenant, client_for, mint_key


@pytest.fixture
def bare(app: FastAPI) -> Iterator[ApiClient]:
    """An admin client of a fresh workspace with no event property declared."""
    token, _ = mint_key(app, f"ev-{uuid.uuid4().hex[:12]}", Role.ADMIN)
    client = client_for(app, token)
    yield client
    client.close()


def _event(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "profile_id": "u1",
        "event": "order",
        "timestamp": "2026-01-02T03:04:05Z",
        "properties": {"amount": 12.5, "sku": "a-1"},
    }
    body.update(overrides)
    return body


def _history(client: ApiClient, profile_id: str = "u1", **params: Any) -> list[dict[str, Any]]:
    response = client.get(f"/v1/profiles/{profile_id}/events", params=params)
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


def test_one_event_creates_its_profile_and_infers_its_property_types(bare: ApiClient) -> None:
    answer = bare.post(
        "/v1/events", json=_event(properties={"amount": 12.5, "item": {"sku": "a-1"}})
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["written"] == 1
    assert bare.get("/v1/profiles/u1").status_code == 200
    types = {p["name"]: p["type"] for p in bare.get("/v1/event-properties").json()}
    assert types == {"amount": "float", "item.sku": "string"}
    assert bare.get("/v1/event-properties/amount").json()["inferred"] is True
    [stored] = _history(bare)
    assert stored["event"] == "order"
    assert stored["timestamp"] == "2026-01-02T03:04:05Z"
    assert stored["properties"] == {"amount": 12.5, "item.sku": "a-1"}
    [name] = bare.get("/v1/event-names").json()
    assert (name["name"], name["count"]) == ("order", 1)


def test_a_float_property_beyond_1e12_is_refused(bare: ApiClient) -> None:
    """sum and avg add a FLOAT as whole micro-units (docs/rules.md): a value beyond ±1e12 is
    refused with its own code, the others written."""
    assert bare.put("/v1/event-properties/amount", json={"type": "float"}).status_code == 201
    batch = [
        _event(profile_id="a", properties={"amount": -1e12}),
        _event(profile_id="b", properties={"amount": 2.5e12}),
    ]
    answer = bare.post("/v1/events", json={"events": batch})
    assert answer.status_code == 207, answer.text
    [written, refused] = answer.json()["results"]
    assert written["status"] == 201 and refused["status"] == 422
    [error] = refused["problem"]["errors"]
    assert error["code"] == "property_out_of_range"
    assert error["location"] == ["properties", "amount"]


def test_a_batch_with_refused_events_answers_207_and_writes_the_rest(bare: ApiClient) -> None:
    assert bare.put("/v1/event-properties/amount", json={"type": "float"}).status_code == 201
    future = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    batch = [
        _event(profile_id="a", event_id="e1"),
        _event(profile_id="b", properties={"amount": "lots"}),
        _event(profile_id="c", timestamp=future),
        _event(profile_id="d", properties={"Bad Name": 1}),
        _event(profile_id="a", event_id="e1"),
    ]
    answer = bare.post("/v1/events", json={"events": batch})
    assert answer.status_code == 207, answer.text
    body = answer.json()
    assert [r["status"] for r in body["results"]] == [201, 422, 422, 422, 200]
    codes = [
        [e["code"] for e in r["problem"]["errors"]] if r.get("problem") else []
        for r in body["results"]
    ]
    assert codes == [
        [],
        ["property_type_mismatch"],
        ["timestamp_in_future"],
        ["property_name_invalid"],
        [],
    ]
    assert body["results"][1]["problem"]["code"] == "event_invalid"
    assert body["results"][4]["duplicate"] is True
    assert (body["written"], body["duplicates"], body["failed"]) == (1, 1, 3)
    # Nothing of a refused event is stored: not its profile, not its property.
    for refused in ("b", "c", "d"):
        assert bare.get(f"/v1/profiles/{refused}").status_code == 404
    assert "bad name" not in {p["name"] for p in bare.get("/v1/event-properties").json()}


def test_a_retried_write_answers_200_and_stores_each_event_once(bare: ApiClient) -> None:
    batch = [_event(event_id=f"id-{n}", timestamp=f"2026-01-0{n + 1}T00:00:00Z") for n in range(3)]
    assert bare.post("/v1/events", json={"events": batch}).status_code == 201
    again = bare.post("/v1/events", json={"events": batch})
    assert again.status_code == 200, again.text
    assert again.json()["duplicates"] == 3
    assert len(_history(bare)) == 3
    assert bare.get("/v1/event-names").json()[0]["count"] == 3
    single = bare.post("/v1/events", json=batch[0])
    assert (single.status_code, single.json()["results"][0]["duplicate"]) == (200, True)


def test_a_copy_counts_as_a_duplicate_within_the_dedupe_window_only(
    app: FastAPI, bare: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``AUDIENCES_EVENT_DEDUPE_WINDOW_HOURS`` (here 1) from the first copy's receipt: a copy
    59 minutes later is a duplicate; 61 minutes later the default engine (DuckDB) stores it."""
    settings = app.state.settings
    monkeypatch.setattr(settings, "event_dedupe_window_hours", 1)
    first = datetime(2026, 1, 10, 12, tzinfo=UTC)

    def post_at(moment: datetime) -> dict[str, Any]:
        monkeypatch.setattr("audiences.api.routes.events.utcnow", lambda: moment)
        answer = bare.post("/v1/events", json=_event(event_id="retry-me"))
        assert answer.status_code in (200, 201), answer.text
        result: dict[str, Any] = answer.json()["results"][0]
        return result

    assert post_at(first)["duplicate"] is False
    assert post_at(first + timedelta(minutes=59))["duplicate"] is True
    assert settings.profile_engine == "duckdb"
    assert post_at(first + timedelta(minutes=61))["duplicate"] is False
    assert len(_history(bare)) == 2


def test_a_single_refused_event_is_a_problem(bare: ApiClient) -> None:
    assert bare.put("/v1/event-properties/amount", json={"type": "integer"}).status_code == 201
    refused = bare.post("/v1/events", json=_event(properties={"amount": 1.5}))
    assert refused.status_code == 422
    assert refused.json()["code"] == "event_invalid"
    assert refused.json()["errors"][0]["code"] == "property_type_mismatch"


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"timestamp": "yesterday"}, "timestamp_invalid"),
        ({"timestamp": "2026-01-02T03:04:05"}, "timestamp_invalid"),
        ({"event": ""}, "string_pattern_mismatch"),
        ({"event": "x" * 201}, "string_pattern_mismatch"),
        ({"profile_id": None}, "string_type"),
        ({"event_id": ""}, "string_pattern_mismatch"),
        ({"colour": "red"}, "extra_forbidden"),
    ],
)
def test_a_body_that_breaks_the_schema_is_refused_whole(
    bare: ApiClient, change: dict[str, Any], code: str
) -> None:
    broken = {**_event(profile_id="broken"), **change}
    batch = [_event(profile_id="fine"), broken]
    refused = bare.post("/v1/events", json={"events": batch})
    assert refused.status_code == 422, refused.text
    assert refused.json()["code"] == "events_invalid"
    [error] = refused.json()["errors"]
    assert error["code"] == code
    assert error["location"][:3] == ["body", "events", 1]
    assert bare.get("/v1/profiles/fine").status_code == 404, "nothing half-written"


def test_more_than_10000_events_answer_413(bare: ApiClient) -> None:
    batch = [{"profile_id": "u", "event": "e"}] * 10_001
    refused = bare.post("/v1/events", json={"events": batch})
    assert refused.status_code == 413
    assert refused.json()["code"] == "too_many_events"
    assert bare.get("/v1/profiles/u").status_code == 404


def test_an_event_without_a_timestamp_happened_when_received(bare: ApiClient) -> None:
    before = datetime.now(UTC)
    assert bare.post("/v1/events", json={"profile_id": "u1", "event": "ping"}).status_code == 201
    [stored] = _history(bare)
    assert datetime.fromisoformat(stored["timestamp"]) >= before - timedelta(seconds=1)
    assert stored["timestamp"] == stored["received_at"]


def test_a_strict_workspace_refuses_undeclared_properties(bare: ApiClient) -> None:
    settings = {"strict_attributes": True}
    assert bare.put("/v1/workspace/settings", json=settings).status_code == 200
    refused = bare.post("/v1/events", json=_event(properties={"amount": 1}))
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["code"] == "property_undeclared"
    assert bare.get("/v1/event-properties").json() == []
    assert bare.put("/v1/event-properties/amount", json={"type": "float"}).status_code == 201
    assert bare.post("/v1/events", json=_event(properties={"amount": 1})).status_code == 201


def test_event_property_types_never_change(bare: ApiClient) -> None:
    assert bare.put("/v1/event-properties/amount", json={"type": "float"}).status_code == 201
    described = bare.put(
        "/v1/event-properties/amount", json={"type": "float", "description": "in EUR"}
    )
    assert described.status_code == 200
    assert described.json()["description"] == "in EUR"
    changed = bare.put("/v1/event-properties/amount", json={"type": "string"})
    assert (changed.status_code, changed.json()["code"]) == (409, "event_property_type_conflict")
    missing = bare.get("/v1/event-properties/nothing")
    assert (missing.status_code, missing.json()["code"]) == (404, "event_property_not_found")
    assert bare.put("/v1/event-properties/event", json={"type": "string"}).status_code == 422


def test_a_profiles_events_page_newest_first_with_a_filter(bare: ApiClient) -> None:
    start = datetime(2026, 3, 1, tzinfo=UTC)
    batch = [
        _event(
            event="view" if n % 3 else "order",
            timestamp=(start + timedelta(hours=n // 2)).isoformat(),
            properties={"n": n},
        )
        for n in range(25)
    ]
    assert bare.post("/v1/events", json={"events": batch}).status_code == 201
    seen: list[int] = []
    cursor = None
    while True:
        params = {"limit": 4, **({"cursor": cursor} if cursor else {})}
        page = bare.get("/v1/profiles/u1/events", params=params)
        assert page.status_code == 200, page.text
        seen += [e["properties"]["n"] for e in page.json()["data"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            assert page.json()["has_more"] is False
            break
        assert 'rel="next"' in page.headers["Link"]
    assert sorted(seen) == list(range(25)), "each event exactly once"
    assert [n // 2 for n in seen] == sorted((n // 2 for n in seen), reverse=True)
    orders = _history(bare, event="order")
    assert {e["event"] for e in orders} == {"order"} and len(orders) == 9
    bad = bare.get("/v1/profiles/u1/events", params={"cursor": "nonsense"})
    assert (bad.status_code, bad.json()["code"]) == (400, "invalid_cursor")
    other = bare.get("/v1/profiles/u1/events", params={"cursor": cursor or "", "event": "view"})
    assert other.status_code in (200, 400)
    assert bare.get("/v1/profiles/nobody/events").status_code == 404


def test_erasing_a_profile_erases_its_events(bare: ApiClient) -> None:
    assert (
        bare.post("/v1/events", json={"events": [_event(), _event(profile_id="u2")]}).status_code
        == 201
    )
    assert bare.delete("/v1/profiles/u1").status_code == 204
    assert bare.get("/v1/profiles/u1/events").status_code == 404
    assert bare.post("/v1/events", json={"profile_id": "u1", "event": "back"}).status_code == 201
    assert [e["event"] for e in _history(bare)] == ["back"], "the old events are gone"
    assert len(_history(bare, "u2")) == 1


def test_retention_is_a_workspace_setting(bare: ApiClient) -> None:
    settings = {"strict_attributes": False, "event_retention_days": 30}
    changed = bare.put("/v1/workspace/settings", json=settings)
    assert changed.status_code == 200
    assert bare.get("/v1/workspace/settings").json()["event_retention_days"] == 30
    for days in (0, 36_501, "30"):
        wrong = bare.put(
            "/v1/workspace/settings",
            json={"strict_attributes": False, "event_retention_days": days},
        )
        assert wrong.status_code == 422, days


def test_reading_keys_cannot_write_events(tenant: Tenant) -> None:
    assert tenant.read.post("/v1/events", json=_event()).status_code == 403
    assert tenant.read.put("/v1/event-properties/a", json={"type": "string"}).status_code == 403
    assert tenant.read.get("/v1/event-names").status_code == 200


def test_past_500_properties_none_is_inferred_and_declaring_is_refused(
    bare: ApiClient,
) -> None:
    wide = _event(properties={f"p{n}": n for n in range(501)})
    answer = bare.post("/v1/events", json={"events": [wide, _event(properties={"p0": 1})]})
    assert answer.status_code == 207, "the 501st property cannot be stored"
    [refused, written] = answer.json()["results"]
    assert refused["problem"]["errors"][0]["code"] == "property_undeclared"
    assert written["status"] == 201
    assert len(bare.get("/v1/event-properties").json()) == 500
    one_more = bare.put("/v1/event-properties/one_more", json={"type": "string"})
    assert (one_more.status_code, one_more.json()["code"]) == (422, "too_many_event_properties")


@pytest.mark.parametrize("text", ["9999-12-31T23:00:00-02:00", "0001-01-01T00:00:00+01:00"])
def test_a_timestamp_property_utc_cannot_hold_is_refused_per_event(
    bare: ApiClient, text: str
) -> None:
    """Converting such a time to UTC overflows: the event is refused as a type mismatch (it
    was a 500), in a batch or alone, and the rest of the batch is written."""
    assert bare.put("/v1/event-properties/n", json={"type": "timestamp"}).status_code == 201
    good = _event(properties={"n": "2026-01-01T00:00:00+01:00"})
    batch = [good, _event(profile_id="bad", properties={"n": text}), good]
    answer = bare.post("/v1/events", json={"events": batch})
    assert answer.status_code == 207, answer.text
    [result] = [r for r in answer.json()["results"] if r["status"] == 422]
    assert [e["code"] for e in result["problem"]["errors"]] == ["property_type_mismatch"]
    assert answer.json()["written"] == 2
    alone = bare.post("/v1/events", json=_event(profile_id="bad", properties={"n": text}))
    assert alone.status_code == 422, alone.text
    assert alone.json()["errors"][0]["code"] == "property_type_mismatch"
    assert bare.get("/v1/profiles/bad").status_code == 404
