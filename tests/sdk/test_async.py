"""The async SDK on the real app in process through ``httpx.ASGITransport``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from audiences.schemas.api_keys import Role
from audiences.sdk import AsyncClient, NotFound, Retry
from tests.api.test_member_writes import run_jobs
from tests.factories import Tenant


def _client(app: FastAPI, tenant: Tenant) -> AsyncClient:
    return AsyncClient(
        "http://testserver",
        key=tenant.tokens[Role.ADMIN],
        transport=httpx.ASGITransport(app=app),
        retry=Retry.none(),
    )


def test_async_resources_paging_waits_and_errors(
    app: FastAPI, tenant: Tenant, tmp_path: Path
) -> None:
    path = tmp_path / "ids.txt"
    path.write_text("".join(f"m{number}\n" for number in range(250)))

    async def scenario() -> None:
        async with _client(app, tenant) as client:
            audience = await client.audiences.create(key="async", name="Async", kind="static")
            job = await client.imports.create(audience, path)
            await asyncio.to_thread(run_jobs, app)
            assert (await client.jobs.wait(job)).counts["added"] == 250
            ids = [member.id async for member in client.audiences.members(audience, limit=100)]
            assert sorted(ids) == sorted(f"m{number}" for number in range(250))
            keys = [found.key async for found in client.audiences.list(limit=1)]
            assert keys == ["async"]
            group = await client.groups.create(name="Async group")
            assert (await client.groups.get(group.id)).name == "Async group"
            await client.profiles.upsert("m1", {"country": "US"})
            assert (await client.profiles.get("m1")).attributes["country"] == "US"
            assert await client.attributes.list()
            assert (await client.workspace.settings()).strict_attributes is False
            assert [key async for key in client.keys.list()]
            chunks = [chunk async for chunk in client.audiences.export(audience, format="ndjson")]
            assert b"".join(chunks).count(b"\n") == 250
            with pytest.raises(NotFound):
                await client.audiences.get("missing")

    asyncio.run(scenario())
