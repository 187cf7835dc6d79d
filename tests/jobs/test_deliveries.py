"""Delivery to real receivers: a webhook server on 127.0.0.1 checks every signature with an
implementation of the spec written in the test, drops duplicates by ``webhook-id``, and
answers as each test scripts it; file destinations write into a temporary root."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from standardwebhooks.webhooks import Webhook

from audiences.api.app import create_app
from audiences.config import Settings
from audiences.services import outbox, static_members
from tests import factories
from tests.client import ApiClient
from tests.factories import Tenant, make_audience, make_tenant
from tests.webhook_receiver import Receiver, receiving

STATIC = (static_members.WRITE_HANDLER, static_members.IMPORT_HANDLER)


@pytest.fixture(scope="module")
def hooks_app(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    """An app whose webhooks may reach loopback, with a schedule short enough to wait out."""
    tuned = settings.model_copy(
        update={
            "data_dir": tmp_path_factory.mktemp("hooks-data"),
            "egress_allow_private": True,
            "webhook_retry_schedule": "0,0.2,0.2,0.2",
            "webhook_batch_wait_seconds": 0.0,
            "webhook_batch_size": 50,
            "webhook_timeout_seconds": 2.0,
            "destination_file_root": tmp_path_factory.mktemp("files"),
        }
    )
    application = create_app(tuned)
    yield application
    application.state.engine.dispose()


@pytest.fixture
def hooks(hooks_app: FastAPI) -> Iterator[Tenant]:
    """A fresh workspace on :func:`hooks_app`."""
    with make_tenant(hooks_app) as made:
        yield made


def static(client: ApiClient) -> dict[str, Any]:
    """A static audience."""
    return make_audience(client, kind="static", name="list")


def write(app: FastAPI, client: ApiClient, audience_id: str, action: str, ids: list[str]) -> None:
    """A membership write, applied."""
    answer = client.post(f"/v1/audiences/{audience_id}/members", json={"action": action, "ids": ids})
    assert answer.status_code == 202, answer.text
    factories.run_jobs(app, *STATIC)


def webhook(client: ApiClient, url: str, **subscription: Any) -> dict[str, Any]:
    """A webhook destination through the API (its secret in the answer)."""
    answer = client.post(
        "/v1/destinations",
        json={"name": "hook", "kind": "webhook", "url": url, "subscription": subscription},
    )
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def deliver(app: FastAPI, until: Callable[[], bool], seconds: float = 10.0) -> None:
    """Run delivery jobs as a worker would until ``until()`` holds (retries wait their turn)."""
    deadline = time.monotonic() + seconds
    while not until():
        assert time.monotonic() < deadline, "deliveries did not arrive in time"
        if not factories.run_jobs(app, outbox.DELIVER_HANDLER):
            time.sleep(0.05)


def test_first_the_full_list_then_changes_signed_per_spec(hooks_app: FastAPI, hooks: Tenant) -> None:
    """A new subscription gets the members as ``entered``, then who entered and exited, each
    change with its cause; every request verifies with the spec's scheme and the
    ``standardwebhooks`` library, and carries the three headers."""
    audience = static(hooks.admin)
    write(hooks_app, hooks.admin, audience["id"], "add", ["u1", "u2"])
    with receiving() as receiver:
        made = webhook(hooks.admin, receiver.url, audience_ids=[audience["id"]])
        receiver.secrets.append(made["secret"])
        deliver(hooks_app, lambda: len(receiver.accepted) >= 1)
        write(hooks_app, hooks.admin, audience["id"], "add", ["u3"])
        write(hooks_app, hooks.admin, audience["id"], "remove", ["u1"])
        deliver(hooks_app, lambda: len(receiver.changes()) >= 4)
    key = audience["key"]
    assert sorted(receiver.changes()[:2]) == [(key, "entered", "u1", 1), (key, "entered", "u2", 1)]
    assert [c[:3] for c in receiver.changes()[2:]] == [(key, "entered", "u3"), (key, "exited", "u1")]
    assert receiver.members(key) == {"u2", "u3"}
    first = receiver.accepted[0]["data"]["audiences"][0]
    assert first["snapshot"] is True and first["changes"][0]["cause"] == {"kind": "full"}
    assert receiver.accepted[-1]["data"]["audiences"][0]["changes"][0]["cause"] == {"kind": "write"}
    oracle = Webhook(made["secret"])
    for request in receiver.requests:
        assert request.verified
        assert request.headers["webhook-id"].startswith("msg_")
        assert int(request.headers["webhook-timestamp"]) > 0
        oracle.verify(request.body, request.headers)


def test_retries_honour_retry_after_and_429_then_deliver_once(hooks_app: FastAPI, hooks: Tenant) -> None:
    """A 503 with ``Retry-After`` and a 429 are retried with the same ``webhook-id`` (the
    receiver keeps one copy); the log shows each attempt with its status."""
    answers = [(503, {"Retry-After": "1"}), (429, {}), (200, {})]

    def script(number: int, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
        return answers[min(number, len(answers) - 1)]

    audience = static(hooks.admin)
    write(hooks_app, hooks.admin, audience["id"], "add", ["a"])
    with receiving(script) as receiver:
        made = webhook(hooks.admin, receiver.url, audience_ids=[audience["id"]])
        receiver.secrets.append(made["secret"])
        started = time.monotonic()
        deliver(hooks_app, lambda: len(receiver.accepted) == 1)
        waited = time.monotonic() - started
    ids = {request.headers["webhook-id"] for request in receiver.requests}
    assert len(receiver.requests) == 3 and len(ids) == 1
    assert waited >= 1.0  # Retry-After: 1 outweighs the 0.2 s of the schedule
    log = hooks.admin.get(f"/v1/destinations/{made['id']}/deliveries").json()["data"]
    assert [(d["status"], d["attempts"], d["last_status"]) for d in log] == [("delivered", 3, 200)]
    one = hooks.admin.get(f"/v1/destinations/{made['id']}/deliveries/{log[0]['id']}").json()
    assert [a["status"] for a in one["attempt_log"]] == [503, 429, 200]


def test_410_disables_and_turning_on_sends_what_waited(hooks_app: FastAPI, hooks: Tenant) -> None:
    """A 410 turns the destination off with the reason; nothing is sent while off; turning
    it on sends the waiting message and later changes."""
    gone = {"on": True}

    def script(number: int, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
        return (410, {}) if gone["on"] else (200, {})

    audience = static(hooks.admin)
    write(hooks_app, hooks.admin, audience["id"], "add", ["a"])
    with receiving(script) as receiver:
        made = webhook(hooks.admin, receiver.url, audience_ids=[audience["id"]])
        receiver.secrets.append(made["secret"])
        deliver(hooks_app, lambda: len(receiver.requests) == 1)
        factories.run_jobs(hooks_app, outbox.DELIVER_HANDLER)
        body = hooks.admin.get(f"/v1/destinations/{made['id']}").json()
        assert body["enabled"] is False and "410" in body["disabled_reason"]
        write(hooks_app, hooks.admin, audience["id"], "add", ["b"])
        factories.run_jobs(hooks_app, outbox.DELIVER_HANDLER)
        assert len(receiver.requests) == 1
        assert hooks.admin.get(f"/v1/destinations/{made['id']}").json()["backlog"] == 2
        gone["on"] = False
        turned = hooks.admin.patch(
            f"/v1/destinations/{made['id']}",
            content=b'{"enabled": true}',
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert turned.status_code == 200, turned.text
        assert turned.json()["disabled_reason"] is None
        deliver(hooks_app, lambda: receiver.members(audience["key"]) == {"a", "b"})
    assert hooks.admin.get(f"/v1/destinations/{made['id']}").json()["backlog"] == 0


def test_failing_past_the_schedule_disables_with_the_reason(hooks_app: FastAPI, hooks: Tenant) -> None:
    """A receiver that answers 500 to every attempt of the schedule gets disabled, saying
    since when it failed; the message waits (backlog) for it to be turned on again."""
    audience = static(hooks.admin)
    write(hooks_app, hooks.admin, audience["id"], "add", ["a"])
    with receiving(lambda n, h: (500, {})) as receiver:
        made = webhook(hooks.admin, receiver.url, audience_ids=[audience["id"]])

        def disabled() -> bool:
            return hooks.admin.get(f"/v1/destinations/{made['id']}").json()["enabled"] is False

        deliver(hooks_app, disabled)
    body = hooks.admin.get(f"/v1/destinations/{made['id']}").json()
    assert len(receiver.requests) == 4  # the whole schedule: 0, 0.2, 0.2, 0.2
    assert "every attempt since" in body["disabled_reason"] and "500" in body["disabled_reason"]
    assert body["backlog"] == 1 and body["last_error"] == "the receiver answered 500"
