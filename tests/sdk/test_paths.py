"""External ids in paths: the SDK percent-encodes every path segment that is client data (one
place, ``_call.endpoint``), and the server routes an encoded ``/`` inside a segment as part of
that segment. Ids holding ``/``, ``?``, ``#``, ``%``, spaces, dots and Unicode name their own
profile for get, delete, events, audiences and explain, over TCP to a real server and in
process to the async client."""

from __future__ import annotations

import asyncio
import time
import uuid
from urllib.parse import unquote

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import given
from hypothesis import strategies as st

from audiences.schemas.api_keys import Role
from audiences.sdk import AsyncClient, Client, NotFound, Retry
from audiences.sdk._call import endpoint, segment
from tests.e2e.conftest import Server
from tests.factories import Tenant

AWKWARD = [
    "orders/42",
    "/leading",
    "trailing/",
    "a?b=c&d",
    "x#y",
    "100%",
    "a%2Fb",
    "two words",
    "ünïcødé/日本",
    ".",
    "..",
    "a+b;c,d",
]


@given(st.text(min_size=1, max_size=40))
def test_a_segment_is_one_segment_that_decodes_to_the_value(value: str) -> None:
    encoded = segment(value)
    url = httpx.URL("http://testserver" + endpoint("/v1/profiles/{}/events", value))
    assert url.raw_path.decode("ascii") == f"/v1/profiles/{encoded}/events"  # nothing resolved
    assert "/" not in encoded and "?" not in encoded and "#" not in encoded
    assert unquote(encoded, errors="strict") == value


def test_awkward_ids_over_a_real_server(live_server: Server) -> None:
    run = uuid.uuid4().hex[:6]
    with Client(live_server.base_url, key=live_server.token, retry=Retry.none()) as client:
        audience = client.audiences.create(
            key=f"old-{run}", name="Old", kind="dynamic", rule="age > 30"
        )
        ids = [f"{run}{value}" for value in AWKWARD] + [value + run for value in (".", "..")]
        ids += list(AWKWARD[-3:-1])  # "." and ".." on their own
        for number, profile_id in enumerate(ids):
            stored = client.profiles.upsert(profile_id, {"age": 40 + number})
            assert stored.id == profile_id
            assert client.profiles.get(profile_id).attributes["age"] == 40 + number
            client.events.send_one(profile_id, "visit", event_id=f"{run}-{number}")
            history = list(client.events.history(profile_id))
            assert [(e.event, e.event_id) for e in history] == [("visit", f"{run}-{number}")]
        run = client.audiences.refresh(audience)
        while run.status == "running":
            time.sleep(0.05)
            run = client.audiences.run(audience, run.id)
        assert run.status == "succeeded", run.error
        for profile_id in ids:
            explained = client.audiences.explain(audience, profile_id)
            assert explained.member is True, profile_id
            assert explained.explanation is not None
            membership = client.audiences.membership(audience, profile_id)
            assert (membership.profile_id, membership.member) == (profile_id, True)
            keys = [found.key for found in client.profiles.audiences(profile_id).audiences]
            assert audience.key in keys
        for profile_id in ids:
            client.profiles.delete(profile_id)
            with pytest.raises(NotFound):
                client.profiles.get(profile_id)


def test_awkward_ids_through_the_async_client(app: FastAPI, tenant: Tenant) -> None:
    async def scenario() -> None:
        async with AsyncClient(
            "http://testserver",
            key=tenant.tokens[Role.ADMIN],
            transport=httpx.ASGITransport(app=app),
            retry=Retry.none(),
        ) as client:
            audience = await client.audiences.create(
                key="adults", name="Adults", kind="dynamic", rule="age > 17"
            )
            for profile_id in AWKWARD:
                await client.profiles.upsert(profile_id, {"age": 30})
                assert (await client.profiles.get(profile_id)).id == profile_id
                await client.events.send_one(profile_id, "visit")
                history = [e.event async for e in client.events.history(profile_id)]
                assert history == ["visit"]
            run = await client.audiences.refresh(audience)  # not a queued job: another
            while run.status == "running":  # test's worker could be running that one
                await asyncio.sleep(0.05)
                run = await client.audiences.run(audience, run.id)
            assert run.status == "succeeded", run.error
            for profile_id in AWKWARD:
                explained = await client.audiences.explain(audience, profile_id)
                assert explained.member is True, profile_id
                await client.profiles.delete(profile_id)
                with pytest.raises(NotFound):
                    await client.profiles.get(profile_id)

    asyncio.run(scenario())
