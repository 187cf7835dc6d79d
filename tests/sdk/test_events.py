"""Events through the SDK on the real app in process, sync and async: batches with duplicates
and refusals (207 as data), one event, a profile's history paged, the property schema, names,
the retention setting, and a file imported as a job."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from audiences.schemas.api_keys import Role
from audiences.schemas.events import EventWrite
from audiences.schemas.jobs import JobState
from audiences.schemas.profiles import EvaluateEvent
from audiences.sdk import AsyncClient, Client, Conflict, NotFound, Retry, Unprocessable
from audiences.sdk.resources.events import Calls
from tests.factories import Tenant, run_jobs

IMPORT = "events.import"


def _order(number: int, **extra: object) -> dict[str, object]:
    return {
        "profile_id": "ann",
        "event": "order",
        "timestamp": f"2026-01-01T10:{number:02}:00Z",
        "properties": {"amount": float(number)},
        "event_id": f"o-{number}",
        **extra,
    }


def test_send_a_batch_with_duplicates_and_refusals_as_data(client: Client) -> None:
    first = client.events.send([_order(1), EventWrite(profile_id="bob", event="signup")])
    assert (first.written, first.duplicates, first.failed) == (2, 0, 0)
    mixed = client.events.send(
        [_order(1), _order(2), _order(3, properties={"amount": "not a number"})]
    )
    assert (mixed.written, mixed.duplicates, mixed.failed) == (1, 1, 1)
    assert [result.status for result in mixed.results] == [200, 201, 422]
    assert mixed.results[0].duplicate and mixed.results[2].problem is not None
    assert mixed.results[2].problem["errors"][0]["code"] == "property_type_mismatch"
    again = client.events.send([_order(1)])
    assert (again.written, again.duplicates) == (0, 1)
    with pytest.raises(Unprocessable) as invalid:
        client.events.send([{"profile_id": "ann"}])
    assert invalid.value.code == "events_invalid"


def test_a_batch_is_retried_only_when_every_event_has_an_id() -> None:
    # No Idempotency-Key on POST /v1/events: an event_id is what makes a resend harmless.
    assert Calls.send([_order(1), _order(2)]).retryable
    assert not Calls.send([_order(1), {"profile_id": "ann", "event": "visit"}]).retryable
    assert Calls.send_one("ann", "visit", event_id="v").retryable
    assert not Calls.send_one("ann", "visit").retryable


def test_send_one_answers_its_result_and_raises_when_refused(client: Client) -> None:
    stored = client.events.send_one("cy", "visit", properties={"page": "/"}, event_id="v-1")
    assert stored.status == 201 and stored.profile_id == "cy"
    assert client.events.send_one("cy", "visit", event_id="v-1").duplicate is True
    with pytest.raises(Unprocessable) as refused:
        client.events.send_one("cy", "visit", properties={"page": 3})
    assert refused.value.code == "event_invalid"


def test_history_pages_newest_first_and_filters_by_name(client: Client) -> None:
    client.events.send([_order(number) for number in range(7)])
    client.events.send([_order(30, event="refund", event_id="r-1")])
    history = client.events.history("ann", limit=3)
    assert [event.event_id for event in history][:2] == ["r-1", "o-6"]
    assert [len(page.data) for page in history.pages()] == [3, 3, 2]
    orders = list(client.events.history("ann", "order"))
    assert [event.event_id for event in orders] == [f"o-{number}" for number in range(6, -1, -1)]
    assert [event.event for event in client.events.history("ann", ["refund"])] == ["refund"]


def test_event_properties_and_names(client: Client) -> None:
    declared = client.event_properties.declare("amount", "float", description="in EUR")
    assert declared.inferred is False and declared.description == "in EUR"
    with pytest.raises(Conflict):
        client.event_properties.declare("amount", "string")
    client.events.send([_order(1), _order(2)])
    assert client.event_properties.get("amount").type == declared.type
    assert [found.name for found in client.event_properties.list()] == ["amount"]
    with pytest.raises(NotFound):
        client.event_properties.get("missing")
    [name] = client.event_names.list()
    assert name.name == "order" and name.count == 2
    kept = client.workspace.update_settings(strict_attributes=False, event_retention_days=90)
    assert kept.event_retention_days == 90 == client.workspace.settings().event_retention_days


def test_import_file_streams_a_file_and_waits_for_its_job(
    app: FastAPI, client: Client, tmp_path: Path
) -> None:
    path = tmp_path / "events.csv"
    rows = "".join(f"u{n},visit,2026-01-01T00:00:{n:02}Z\n" for n in range(40))
    path.write_text("profile_id,event,timestamp\n" + rows + "u1,visit,yesterday\n")
    sent: list[int] = []
    job = client.events.import_file(path, on_upload=sent.append)
    assert job.handler == IMPORT and sent[-1] == path.stat().st_size
    run_jobs(app, IMPORT)
    done = client.jobs.wait(job)
    assert done.state is JobState.SUCCEEDED
    assert (done.counts["written"], done.counts["invalid"]) == (40, 1)
    assert [event.event for event in client.events.history("u3")] == ["visit"]
    with pytest.raises(FileNotFoundError):
        client.events.import_file(tmp_path / "missing.csv")


TWICE = "count(*) FILTER (WHERE event = 'order' AND timestamp > now() - INTERVAL 1 DAY) >= 2"


def _recent(**ago: float) -> datetime:
    return datetime.now(UTC) - timedelta(**ago)


def test_evaluate_with_given_events_beside_the_stored_ones(client: Client) -> None:
    client.audiences.create(key="twice", name="Twice", kind="dynamic", rule=TWICE)
    client.events.send_one("eve", "order", timestamp=_recent(hours=2))

    def member(*args: str | None, **kwargs: object) -> bool:
        verdicts = client.profiles.evaluate(*args, **kwargs).audiences  # type: ignore[arg-type]
        return next(v.member for v in verdicts if v.key == "twice")

    assert not member("eve")  # one stored order
    assert member("eve", events=[{"event": "order", "timestamp": _recent(minutes=5)}])
    assert not member("eve", events=[{"event": "order", "timestamp": _recent(days=3)}])
    given = [EvaluateEvent(event="order"), EvaluateEvent(event="order")]  # at evaluation time
    assert member(attributes={"country": "US"}, events=given)
    assert [event.event for event in client.events.history("eve")] == ["order"]  # none stored
    with pytest.raises(Unprocessable) as too_many:
        client.profiles.evaluate("eve", events=[{"event": "order"}] * 1_001)
    assert too_many.value.code == "validation_failed"


def test_async_events_resources(app: FastAPI, tenant: Tenant, tmp_path: Path) -> None:
    path = tmp_path / "events.ndjson"
    path.write_text('{"profile_id": "zed", "event": "visit", "event_id": "n-1"}\n')

    async def scenario() -> None:
        async with AsyncClient(
            "http://testserver",
            key=tenant.tokens[Role.ADMIN],
            transport=httpx.ASGITransport(app=app),
            retry=Retry.none(),
        ) as client:
            sent = await client.events.send([_order(1), _order(2, properties={"amount": "x"})])
            assert (sent.written, sent.failed) == (1, 1)
            assert (await client.events.send_one("ann", "visit")).status == 201
            history = [event.event async for event in client.events.history("ann", limit=1)]
            assert sorted(history) == ["order", "visit"]
            await client.event_properties.declare("page", "string")
            assert (await client.event_properties.get("page")).type == "string"
            assert {found.name for found in await client.event_properties.list()} == {
                "amount", "page"
            }  # fmt: skip
            assert {found.name for found in await client.event_names.list()} == {"order", "visit"}
            job = await client.events.import_file(path)
            await asyncio.to_thread(run_jobs, app, IMPORT)
            assert (await client.jobs.wait(job)).counts["written"] == 1
            await client.audiences.create(key="twice", name="Twice", kind="dynamic", rule=TWICE)
            given = [{"event": "order", "timestamp": _recent(minutes=m)} for m in (1, 2)]
            result = await client.profiles.evaluate(attributes={}, events=given)
            assert [v.member for v in result.audiences if v.key == "twice"] == [True]

    asyncio.run(scenario())
