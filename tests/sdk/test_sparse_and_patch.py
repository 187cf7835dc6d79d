"""``fields=`` (sparse answers) and JSON Patch through the SDK on the real app in process,
sync and async: a partial model holds exactly the fields that came back, validated, and reading
another raises; a JSON Patch applies whole or not at all, ``test`` and ``If-Match`` honoured."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI

from audiences.schemas.api_keys import Role
from audiences.sdk import AsyncClient, Client, Conflict, PreconditionFailed, Retry
from tests.factories import Tenant


def test_get_and_list_with_fields_answer_partial_models(client: Client) -> None:
    made = client.audiences.create(key="sparse", name="Sparse", kind="dynamic", rule="age > 3")
    got = client.audiences.get(made, fields=["key", "created_at"])
    assert got.model_fields_set == {"id", "key", "created_at"}
    assert (got.id, got.key, got.created_at) == (made.id, "sparse", made.created_at)
    with pytest.raises(AttributeError):
        _ = got.name
    assert got.model_dump(mode="json") == {
        "id": made.id, "key": "sparse", "created_at": got.model_dump(mode="json")["created_at"]
    }  # fmt: skip
    listed = list(client.audiences.list(fields="key,size", limit=1))
    assert [(a.id, a.key) for a in listed] == [(made.id, "sparse")]
    assert listed[0].model_fields_set == {"id", "key", "size"}
    group = client.groups.create(name="Folder")
    assert client.groups.get(group, fields=["name"]).model_fields_set == {"id", "name"}
    assert [g.name for g in client.groups.list(fields=["name"])] == ["Folder"]
    keys = list(client.keys.list(fields=["role"]))
    assert keys and all(k.model_fields_set == {"id", "role"} for k in keys)
    assert client.keys.get(keys[0].id, fields="name").model_fields_set == {"id", "name"}
    jobs = client.jobs.list(fields=["state"]).first_page()
    assert jobs.data and jobs.data[0].model_fields_set == {"id", "state"}
    job = client.jobs.get(jobs.data[0].id, fields=["kind"])
    assert job.kind is not None and job.model_fields_set == {"id", "kind"}
    run = client.audiences.refresh(made)
    runs = list(client.audiences.runs(made, fields=["number"]))
    assert [(r.id, r.number) for r in runs] == [(run.id, 1)]
    assert client.audiences.run(made, run.id, fields="trigger").trigger == "manual"
    whole = client.audiences.get(made)
    assert whole.name == "Sparse" and "name" in whole.model_fields_set


def test_json_patch_applies_whole_with_test_and_if_match(client: Client) -> None:
    made = client.audiences.create(key="patched", name="Before", kind="dynamic", rule="age > 3")
    operations = [
        {"op": "test", "path": "/version", "value": 1},
        {"op": "replace", "path": "/name", "value": "After"},
        {"op": "add", "path": "/labels/-", "value": "core"},
    ]
    patched = client.audiences.patch(made, operations, if_match=True)
    assert (patched.name, patched.labels, patched.version) == ("After", ["core"], 2)
    with pytest.raises(Conflict) as failed:
        client.audiences.patch(patched, [*operations[:1], {"op": "remove", "path": "/labels/0"}])
    assert failed.value.code == "patch_test_failed"
    assert client.audiences.get(made).labels == ["core"]  # nothing applied
    lost = [{"op": "replace", "path": "/name", "value": "Lost"}]
    with pytest.raises(PreconditionFailed):
        client.audiences.patch(made, lost, if_match=True)
    group = client.groups.create(name="G")
    renamed = client.groups.patch(group, [{"op": "replace", "path": "/name", "value": "H"}])
    assert renamed.name == "H"


def test_async_fields_and_patch(app: FastAPI, tenant: Tenant) -> None:
    async def scenario() -> None:
        async with AsyncClient(
            "http://testserver",
            key=tenant.tokens[Role.ADMIN],
            transport=httpx.ASGITransport(app=app),
            retry=Retry.none(),
        ) as client:
            made = await client.audiences.create(key="a", name="A", kind="static")
            patched = await client.audiences.patch(
                made, [{"op": "replace", "path": "/description", "value": "d"}], if_match=True
            )
            assert patched.description == "d"
            got = await client.audiences.get(made, fields=["description"])
            assert got.model_fields_set == {"id", "description"} and got.description == "d"
            keys = [a.key async for a in client.audiences.list(fields=["key"])]
            assert keys == ["a"]

    asyncio.run(scenario())
