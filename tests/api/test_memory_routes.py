"""The shortcuts in front of is-member and a profile's audiences answer exactly as the full
routes do: same bodies, same headers, the rate limit counted once, every error from the route."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from audiences.api.memory_routes import MemoryShortcut
from audiences.api.ratelimit import RateLimiter
from audiences.schemas.api_keys import Role
from tests.factories import Tenant, client_for, make_audience, mint_key


class CountingRoute:
    """Stands in for a shortcut's full route, counting the requests handed to it."""

    def __init__(self, route: Any) -> None:
        self.route = route
        self.path = route.path
        self.calls = 0

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        await self.route.handle(scope, receive, send)


@pytest.fixture
def fallbacks(app: FastAPI) -> Iterator[dict[str, CountingRoute]]:
    """The requests each shortcut handed to its full route, by path."""
    shortcuts = [
        route.app
        for route in app.router.routes
        if isinstance(route, Route) and isinstance(route.app, MemoryShortcut)
    ]
    assert len(shortcuts) == 2
    originals = [shortcut.full for shortcut in shortcuts]
    counters = {}
    for shortcut in shortcuts:
        counter = CountingRoute(shortcut.full)
        shortcut.full = counter  # type: ignore[assignment]
        counters[counter.path] = counter
    yield counters
    for shortcut, original in zip(shortcuts, originals, strict=True):
        shortcut.full = original


MEMBER_PATH = "/v1/audiences/{audience_id}/members/{profile_id}"
AUDIENCES_PATH = "/v1/profiles/{profile_id}/audiences"


@pytest.fixture
def pro(tenant: Tenant) -> dict[str, Any]:
    """A streaming audience of the pro plan, with one member and one profile outside it."""
    audience = make_audience(
        tenant.write, name="pro", rule="plan = 'pro'", refresh_policy={"mode": "streaming"}
    )
    for external_id, plan in (("in", "pro"), ("out", "free")):
        response = tenant.write.put(
            f"/v1/profiles/{external_id}", json={"attributes": {"plan": plan}}
        )
        assert response.status_code in (200, 201), response.text
    return audience


def test_a_cached_answer_skips_the_route_and_matches_it(
    tenant: Tenant, pro: dict[str, Any], fallbacks: dict[str, CountingRoute]
) -> None:
    for external_id, member in (("in", True), ("out", False)):
        url = f"/v1/audiences/{pro['id']}/members/{external_id}"
        full = tenant.read.get(url, params={"explain": "false"})  # a query: the full route
        before = fallbacks[MEMBER_PATH].calls
        short = tenant.read.get(url)
        assert fallbacks[MEMBER_PATH].calls == before  # answered by the shortcut
        assert short.status_code == full.status_code == 200
        assert short.json() == full.json()
        assert short.json()["member"] is member
        assert short.headers["content-type"] == full.headers["content-type"]
        assert "ratelimit" in short.headers and "x-request-id" in short.headers

    full = tenant.read.get("/v1/profiles/in/audiences", params={"unused": "1"})
    before = fallbacks[AUDIENCES_PATH].calls
    short = tenant.read.get("/v1/profiles/in/audiences")
    assert fallbacks[AUDIENCES_PATH].calls == before
    assert short.json() == full.json()
    assert [a["name"] for a in short.json()["audiences"]] == ["pro"]


def test_what_is_not_cached_goes_to_the_route(
    tenant: Tenant, pro: dict[str, Any], fallbacks: dict[str, CountingRoute]
) -> None:
    counter = fallbacks[MEMBER_PATH]
    answer = tenant.read.get(f"/v1/audiences/{pro['id']}/members/nobody")
    assert answer.status_code == 404
    assert answer.json()["code"] == "profile_not_found"
    assert counter.calls == 1
    assert tenant.read.get(f"/v1/audiences/{pro['id']}/members/nobody").status_code == 404
    assert counter.calls == 2  # a miss is never cached as an answer


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/v1/audiences/{audience}/members/{bad}", 422, "validation_failed"),
        ("/v1/audiences/no-such-audience/members/in", 404, "audience_not_found"),
        ("/v1/audiences/{audience}/members/in?explain=true", 200, None),
    ],
)
def test_refusals_and_options_come_from_the_route(
    tenant: Tenant,
    pro: dict[str, Any],
    fallbacks: dict[str, CountingRoute],
    path: str,
    status: int,
    code: str | None,
) -> None:
    url = path.format(audience=pro["id"], bad="x" * 513)
    tenant.read.get(f"/v1/audiences/{pro['id']}/members/in")  # everything warm
    before = fallbacks[MEMBER_PATH].calls
    response = tenant.read.get(url)
    assert response.status_code == status, response.text
    if code is not None:
        assert response.json()["code"] == code
    else:
        assert response.json()["explanation"] is not None
    assert fallbacks[MEMBER_PATH].calls == before + 1


def test_keys_are_checked_as_the_route_checks_them(
    app: FastAPI, tenant: Tenant, pro: dict[str, Any]
) -> None:
    url = f"/v1/audiences/{pro['id']}/members/in"
    assert tenant.read.get(url).json()["member"] is True  # caller and answer cached
    client = client_for(app, None)
    assert client.get(url).status_code == 401
    for header in ("Basic abc", "Bearer", "Bearer aud_not-a-key"):
        response = client.get(url, headers={"Authorization": header})
        assert response.status_code == 401, header
    other_token, _ = mint_key(app, "someone-else", Role.READ)
    response = client_for(app, other_token).get(url)
    assert response.status_code == 404  # another workspace's audience is not found


def test_the_rate_limit_is_counted_once_per_request(
    app: FastAPI,
    tenant: Tenant,
    pro: dict[str, Any],
    fallbacks: dict[str, CountingRoute],
) -> None:
    url = f"/v1/audiences/{pro['id']}/members/in"
    assert tenant.read.get(url).status_code == 200  # warm
    # Set and restored by hand: monkeypatch's undo deletes attributes of Starlette's State.
    original = app.state.rate_limiter
    app.state.rate_limiter = RateLimiter("3/minute")
    try:
        remaining = [tenant.read.get(url).headers["ratelimit"] for _ in range(3)]
        refused = tenant.read.get(url)
    finally:
        app.state.rate_limiter = original
    assert [value.split(";")[1] for value in remaining] == ["r=2", "r=1", "r=0"]
    assert refused.status_code == 429
    assert refused.json()["code"] == "rate_limited"
    assert int(refused.headers["retry-after"]) >= 1
