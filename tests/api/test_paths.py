"""An encoded ``/`` inside a path segment is part of the segment (``api/paths.py``): an
external id holding ``/`` names one profile, a forged ``%00`` cannot pass for a slash, and
problems show the path as the client sent it."""

from __future__ import annotations

import asyncio
import uuid
from urllib.parse import quote

import httpx
from starlette.types import Message, Receive, Scope, Send

from audiences.api.paths import EncodedSlashMiddleware, restore_slashes
from tests.e2e.conftest import Server
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


def test_a_next_page_link_keeps_the_encoded_slash_over_a_real_server(
    live_server: Server,
) -> None:
    profile = f"zz{uuid.uuid4().hex[:6]}/q é%"
    path = "/v1/profiles/" + quote(profile, safe="")
    headers = {"Authorization": f"Bearer {live_server.token}"}
    with httpx.Client(base_url=live_server.base_url, headers=headers, timeout=30) as http:
        assert http.put(path, json={"attributes": {}}).status_code in (200, 201)
        for number in range(3):
            sent = http.post(
                "/v1/events",
                json={"profile_id": profile, "event": "visit", "event_id": f"{profile}-{number}"},
            )
            assert sent.status_code < 300, sent.text
        seen, url = [], f"{path}/events?limit=1"
        while url:
            page = http.get(url)
            assert page.status_code == 200, page.text
            seen += [event["event_id"] for event in page.json()["data"]]
            link = page.headers.get("link")
            url = link[1 : link.index(">")] if link else ""
            assert "\x00" not in url and (not url or quote(profile, safe="") in url)
    assert sorted(seen) == [f"{profile}-{number}" for number in range(3)]


def test_raw_utf8_next_to_an_escape_decodes_as_utf8() -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["path"])

    middleware = EncodedSlashMiddleware(app)
    raw = "/v1/profiles/é%2Fx%C3%A9".encode()
    scope = {"type": "http", "path": "ignored", "raw_path": raw}
    asyncio.run(middleware(scope, _nothing, _nowhere))
    assert [restore_slashes(path) for path in seen] == ["/v1/profiles/é/xé"]


async def _nothing() -> Message:
    return {"type": "http.disconnect"}


async def _nowhere(message: Message) -> None:
    return None
