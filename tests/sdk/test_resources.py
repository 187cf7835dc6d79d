"""The sync SDK on the real app in process: every resource, paging, If-Match, exports."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI

from audiences.schemas.api_keys import Role
from audiences.schemas.jobs import JobState
from audiences.sdk import Client, Conflict, PreconditionFailed
from audiences.services import syncs
from tests import factories
from tests.api.test_member_writes import run_jobs
from tests.factories import Tenant
from tests.sdk.conftest import sdk_client


def test_audiences_create_get_update_delete_with_if_match(client: Client) -> None:
    created = client.audiences.create(key="us", name="US", kind="dynamic", rule="country = 'US'")
    assert created.rule == "country = 'US'" and created.version == 1
    assert client.audiences.get(created.id).key == "us"
    renamed = client.audiences.update(created, if_match=True, name="United States")
    assert renamed.name == "United States" and renamed.version == 2
    with pytest.raises(PreconditionFailed):
        client.audiences.update(created, if_match=True, name="lost update")
    replaced = client.audiences.replace(
        renamed, {"key": "us", "name": "US again", "kind": "dynamic", "rule": "age > 3"},
        if_match=True,
    )  # fmt: skip
    assert replaced.rule == "age > 3"
    found = client.audiences.bulk_get([created.id, "missing"])
    assert [item.status for item in found.results] == [200, 404]
    client.audiences.delete(replaced, if_match=True)
    assert client.audiences.list(key="us").first_page().total == 0


def test_lists_page_through_everything(client: Client) -> None:
    for number in range(7):
        client.audiences.create(key=f"a{number}", name=f"A {number}", kind="static")
    pager = client.audiences.list(limit=3, sort="key")
    assert [audience.key for audience in pager] == [f"a{number}" for number in range(7)]
    assert [len(page.data) for page in pager.pages()] == [3, 3, 1]
    second = pager.first_page().next_cursor
    assert next(iter(pager.starting_at(second))).key == "a3"


def test_members_changes_runs_and_export_of_a_static_audience(
    app: FastAPI, client: Client, tmp_path: Path
) -> None:
    audience = client.audiences.create(key="list", name="List", kind="static")
    ids = [f"u{number:04}" for number in range(450)]
    job = client.audiences.write_members(audience, action="add", ids=ids)
    run_jobs(app)
    seen: list[JobState] = []
    done = client.jobs.wait(job, on_progress=lambda current: seen.append(current.state))
    assert done.state is JobState.SUCCEEDED and seen[-1] is JobState.SUCCEEDED
    members = client.audiences.members(audience, limit=200)
    assert sorted(member.id for member in members) == ids
    assert [len(page.data) for page in members.pages()] == [200, 200, 50]
    changes = list(client.audiences.changes(audience, limit=100))
    assert len(changes) == 450 and {change.change for change in changes} == {"entered"}
    runs = list(client.audiences.runs(audience))
    assert client.audiences.run(audience, runs[0].id).size == 450
    assert client.audiences.membership(audience, "u0001").member is True
    written = client.audiences.export(audience).to_file(tmp_path / "out.csv")
    lines = (tmp_path / "out.csv").read_text().splitlines()
    assert written > 0 and lines[0] == "id" and sorted(lines[1:]) == ids


def test_imports_upload_a_file_streamed_from_disk(
    app: FastAPI, client: Client, tmp_path: Path
) -> None:
    audience = client.audiences.create(key="imported", name="Imported", kind="static")
    path = tmp_path / "ids.csv"
    path.write_text("id\n" + "".join(f"p{number}\n" for number in range(3000)))
    sent: list[int] = []
    job = client.imports.create(audience, path, mode="replace", on_upload=sent.append)
    assert sent[-1] == path.stat().st_size
    run_jobs(app)
    done = client.jobs.wait(job)
    assert done.counts["added"] == 3000
    assert client.audiences.get(audience.id).size == 3000
    assert "row,line,code,message" in client.jobs.errors_csv(job.id)
    with pytest.raises(FileNotFoundError):
        client.imports.create(audience, tmp_path / "missing.csv")


def test_dynamic_audience_refresh_preview_and_explain(client: Client) -> None:
    client.profiles.upsert("ann", {"country": "US", "age": 40})
    batch = client.profiles.upsert_many([{"id": "bob", "attributes": {"country": "FR", "age": 20}}])
    assert batch.written == 1
    audience = client.audiences.create(key="us-40", name="US", kind="dynamic", rule="age > 30")
    run = client.audiences.refresh(audience)
    assert run.audience_id == audience.id
    preview = client.audiences.preview("country = 'FR'", sample=5)
    assert preview.size == 1 and preview.sample == ["bob"]
    against = client.audiences.preview("age > 10", audience=audience)
    assert against.entering is not None
    explained = client.audiences.explain(audience, "ann")
    assert explained.explanation is not None and explained.explanation["value"] is True


def test_external_audience_sync(app: FastAPI, client: Client) -> None:
    client.profiles.upsert_many([{"id": f"s{n}", "attributes": {"age": 20 + n}} for n in range(5)])
    query = "SELECT external_id FROM profiles WHERE age >= 22"
    audience = client.audiences.create(
        key="sql-list", name="SQL", kind="external", source={"type": "sql", "query": query}
    )
    assert audience.sync is not None and audience.sync.status == "syncing"
    job = client.audiences.sync(audience)
    assert (job.handler, job.id) == ("membership.sync", audience.sync.job_id)
    factories.run_jobs(app, syncs.SYNC_HANDLER)
    assert client.jobs.wait(job).state is JobState.SUCCEEDED
    synced = client.audiences.get(audience)
    assert synced.sync is not None and synced.sync.status == "synced"
    assert {member.id for member in client.audiences.members(audience)} == {"s2", "s3", "s4"}
    pushed = client.audiences.create(key="pushed", name="P", kind="external")
    with pytest.raises(Conflict) as refused:
        client.audiences.sync(pushed)
    assert refused.value.code == "audience_not_syncable"


def test_profiles_evaluate_attributes_and_workspace(client: Client) -> None:
    client.audiences.create(key="fr", name="FR", kind="dynamic", rule="country = 'FR'")
    profile = client.profiles.upsert("zoe", {"country": "FR"})
    assert client.profiles.get("zoe").attributes["country"] == "FR" == profile.attributes["country"]
    verdicts = client.profiles.evaluate("zoe").audiences
    assert [verdict.key for verdict in verdicts if verdict.member] == ["fr"]
    assert client.profiles.evaluate(attributes={"country": "DE"}).audiences[0].member is False
    assert client.profiles.audiences("zoe").profile_id == "zoe"
    client.profiles.delete("zoe")
    names = {attribute.name for attribute in client.attributes.list()}
    assert {"country", "age"} <= names
    declared = client.attributes.declare("score", "float", description="a score")
    assert client.attributes.get("score").type == declared.type
    assert client.workspace.update_settings(strict_attributes=True).strict_attributes is True
    assert client.workspace.settings().strict_attributes is True


def test_groups_keys_and_jobs(client: Client, app: FastAPI, tenant: Tenant) -> None:
    group = client.groups.create(name="Marketing", description="lists")
    client.audiences.create(key="g1", name="G1", kind="static", group_id=group.id)
    assert client.groups.get(group, include="audiences").audience_count == 1
    assert client.groups.update(group, if_match=True, name="Growth").name == "Growth"
    assert [found.name for found in client.groups.list(q="Growth")] == ["Growth"]
    with pytest.raises(Conflict):
        client.groups.delete(group.id)
    client.groups.delete(group.id, detach=True)
    made = client.keys.create(name="robot", role="read")
    assert made.token.startswith("aud_") and client.keys.get(made.id).name == "robot"
    assert made.id in {key.id for key in client.keys.list()}
    client.keys.revoke(made.id)
    audience = client.audiences.create(key="queued", name="Q", kind="static")
    job = client.audiences.write_members(audience, action="add", ids=["a"])
    assert client.jobs.get(job.id).state is JobState.QUEUED
    assert job.id in {found.id for found in client.jobs.list(subject_id=audience.id)}
    assert client.jobs.cancel(job.id).state is JobState.CANCELLED
    with sdk_client(app, tenant, Role.READ) as reader:
        assert reader.audiences.get(audience.id).id == audience.id
