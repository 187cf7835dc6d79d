"""An encoded ``/`` inside a path segment is part of the segment (``api/paths.py``): an
external id holding ``/`` names one profile, a forged ``%00`` cannot pass for a slash, and
problems show the path as the client sent it."""

from __future__ import annotations

from tests.factories import Tenant


def test_an_encoded_slash_is_part_of_the_id(tenant: Tenant) -> None:
    put = tenant.write.put("/v1/profiles/orders%2F42", json={"attributes": {"age": 3}})
    assert put.status_code == 201, put.text
    assert put.json()["id"] == "orders/42"
    assert tenant.read.get("/v1/profiles/orders%2f42").json()["id"] == "orders/42"
    events = tenant.read.get("/v1/profiles/orders%2F42/events")
    assert events.status_code == 200, events.text
    assert tenant.read.get("/v1/profiles/orders/42").status_code == 404  # two segments: no route


def test_a_forged_null_is_refused_not_read_as_a_slash(tenant: Tenant) -> None:
    tenant.write.put("/v1/profiles/a%2Fb", json={"attributes": {"age": 3}})
    for path in ("/v1/profiles/a%00b", "/v1/profiles/a%00b%2Fc"):
        answer = tenant.read.get(path)
        assert answer.status_code == 422, answer.text
        assert answer.json()["errors"][0]["location"] == ["path", "profile_id"]


def test_problems_show_the_encoded_slash(tenant: Tenant) -> None:
    missing = tenant.read.get("/v1/profiles/no%2Fsuch")
    assert missing.status_code == 404
    assert missing.json()["instance"] == "/v1/profiles/no%2Fsuch"
    other = tenant.read.get("/v1/audiences/x%2Fy")
    assert other.status_code in (404, 422), other.text
    assert "\x00" not in other.text and "\\u0000" not in other.text
