"""``client.destinations`` (sync and async) on the real app in process."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI

from audiences.schemas.api_keys import Role
from audiences.sdk import AsyncClient, Client, Conflict, NotFound, Retry, Unprocessable
from audiences.sdk.resources.destinations import subscription
from tests.factories import Tenant

URL = "https://hooks.example.com/in"


def test_the_whole_life_of_a_destination(client: Client) -> None:
    """Create (secret shown once), list, get, update with its version, rotate, reset, read
    the (empty) log, delete; errors come back typed."""
    audience = client.audiences.create(key="sdk-dest", name="SDK", kind="static")
    made = client.destinations.create(
        name="crm", kind="webhook", url=URL, subscription=subscription([audience.id])
    )
    assert made.secret is not None and made.secret.startswith("whsec_")
    assert [d.id for d in client.destinations.list(kind="webhook")] == [made.id]
    fetched = client.destinations.get(made.id)
    assert fetched.secret is None and fetched.backlog >= 0
    updated = client.destinations.update(fetched, if_match=True, description="the CRM")
    assert updated.description == "the CRM" and updated.version == 2
    rotated = client.destinations.rotate_secret(made.id)
    assert rotated.secret != made.secret
    assert client.destinations.reset(made.id).id == made.id
    assert list(client.destinations.deliveries(made.id)) == []
    with pytest.raises(Unprocessable) as refused:
        client.destinations.create(
            name="bad", kind="webhook", url=URL, subscription=subscription(["missing"])
        )
    assert refused.value.code == "unknown_audience"
    with pytest.raises(Conflict):
        client.destinations.create(name="crm", kind="webhook", url=URL, subscription={"all": True})
    client.destinations.delete(made.id)
    with pytest.raises(NotFound):
        client.destinations.get(made.id)


def test_async_destinations(app: FastAPI, tenant: Tenant) -> None:
    """The async resource creates, lists and deletes."""

    async def scenario() -> None:
        async with AsyncClient(
            "http://testserver",
            key=tenant.tokens[Role.ADMIN],
            transport=httpx.ASGITransport(app=app),
            retry=Retry.none(),
        ) as client:
            made = await client.destinations.create(
                name="async", kind="webhook", url=URL, subscription=subscription(all_audiences=True)
            )
            assert [d.name async for d in client.destinations.list()] == ["async"]
            await client.destinations.delete(made.id)

    asyncio.run(scenario())


def test_a_subscription_is_replaced_whole_and_times_need_no_offset(client: Client) -> None:
    """``update(subscription=…)`` moves between the three forms (a merge patch alone would
    merge their keys); ``redeliver(since=…)`` takes a datetime without an offset (UTC, as
    the command line reads it) or RFC 3339 text."""
    audience = client.audiences.create(key="sdk-sub", name="Sub", kind="static")
    made = client.destinations.create(
        name="subs", kind="webhook", url=URL, subscription=subscription([audience.id])
    )
    everything = client.destinations.update(made.id, subscription=subscription(all_audiences=True))
    assert everything.subscription.model_dump() == {"all": True}
    back = client.destinations.update(made.id, subscription=subscription([audience.id]))
    assert back.subscription.model_dump() == {"audience_ids": [audience.id]}
    naive = datetime(2026, 1, 1, 12, 0)
    for since in (naive, "2026-01-01T12:00:00Z", naive.replace(tzinfo=UTC)):
        assert client.destinations.redeliver(made.id, since=since).redelivered == 0
