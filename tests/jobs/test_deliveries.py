"""Delivery to real receivers: a webhook server on 127.0.0.1 checks every signature with an
implementation of the spec written in the test, drops duplicates by ``webhook-id``, and
answers as each test scripts it; file destinations write into a temporary root."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
from fastapi import FastAPI
from sqlalchemy import select, update
from standardwebhooks.webhooks import Webhook

from audiences.jobs import schedule
from audiences.kit.clock import utcnow
from audiences.services import outbox, static_members
from audiences.store.tables import DestinationMessageRow, DestinationRow
from tests import factories
from tests.client import ApiClient
from tests.factories import Tenant, make_audience, make_tenant
from tests.webhook_receiver import receiving

STATIC = (static_members.WRITE_HANDLER, static_members.IMPORT_HANDLER)


def static(client: ApiClient) -> dict[str, Any]:
    """A static audience."""
    return make_audience(client, kind="static", name="list")


def write(app: FastAPI, client: ApiClient, audience_id: str, action: str, ids: list[str]) -> None:
    """A membership write, applied."""
    answer = client.post(
        f"/v1/audiences/{audience_id}/members", json={"action": action, "ids": ids}
    )
    assert answer.status_code == 202, answer.text
    factories.run_jobs(app, *STATIC)


def webhook(
    client: ApiClient, url: str, *, name: str = "hook", **subscription: Any
) -> dict[str, Any]:
    """A webhook destination through the API (its secret in the answer)."""
    answer = client.post(
        "/v1/destinations",
        json={"name": name, "kind": "webhook", "url": url, "subscription": subscription},
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


def test_first_the_full_list_then_changes_signed_per_spec(
    hooks_app: FastAPI, hooks: Tenant
) -> None:
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
    assert [c[:3] for c in receiver.changes()[2:]] == [
        (key, "entered", "u3"),
        (key, "exited", "u1"),
    ]
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


def test_retries_honour_retry_after_and_429_then_deliver_once(
    hooks_app: FastAPI, hooks: Tenant
) -> None:
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
    shown = hooks.admin.get(f"/v1/destinations/{made['id']}").json()
    assert shown["last_delivery_at"] is not None and shown["backlog"] == 0
    metrics = hooks.anonymous.get("/metrics").text
    assert (
        metric(metrics, 'audiences_destination_attempts_total{kind="webhook",outcome="failed"}')
        >= 2
    )
    assert (
        metric(metrics, 'audiences_destination_attempts_total{kind="webhook",outcome="delivered"}')
        >= 1
    )
    assert metric(metrics, 'audiences_destination_lag_seconds{quantile="1.0"}') >= 1.0
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


def test_failing_past_the_schedule_disables_with_the_reason(
    hooks_app: FastAPI, hooks: Tenant
) -> None:
    """A receiver that answers 500 to every attempt of the schedule gets disabled, saying
    since when it failed; the message waits (backlog) for it to be turned on again."""
    audience = static(hooks.admin)
    write(hooks_app, hooks.admin, audience["id"], "add", ["a"])
    with receiving(lambda n, h: (500, {})) as receiver:
        made = webhook(hooks.admin, receiver.url, audience_ids=[audience["id"]])
        # Beside it, one whose attempts have no status: nobody listens on its port.
        refused = webhook(
            hooks.admin, f"http://127.0.0.1:{_closed_port()}/", name="refused", all=True
        )

        def disabled() -> bool:
            return all(
                hooks.admin.get(f"/v1/destinations/{one['id']}").json()["enabled"] is False
                for one in (made, refused)
            )

        deliver(hooks_app, disabled)
    body = hooks.admin.get(f"/v1/destinations/{made['id']}").json()
    assert len(receiver.requests) == 4  # the whole schedule: 0, 0.2, 0.2, 0.2
    assert "every attempt since" in body["disabled_reason"] and "500" in body["disabled_reason"]
    assert body["backlog"] == 1 and body["last_error"] == "the receiver answered 500"
    # Failures with and without a status are one series (a scrape with two is refused).
    samples = [
        line.rsplit(" ", 1)[0]
        for line in hooks.anonymous.get("/metrics").text.splitlines()
        if line.startswith("audiences_destination_attempts_total{")
    ]
    assert 'audiences_destination_attempts_total{kind="webhook",outcome="failed"}' in samples
    assert len(samples) == len(set(samples)), samples
    # A counter never goes down: deleting the destinations (and their log) keeps the count.
    failed = 'audiences_destination_attempts_total{kind="webhook",outcome="failed"}'
    before = metric(hooks.anonymous.get("/metrics").text, failed)
    for one in (made, refused):
        assert hooks.admin.delete(f"/v1/destinations/{one['id']}").status_code == 204
    assert metric(hooks.anonymous.get("/metrics").text, failed) == before


def _closed_port() -> int:
    """A loopback port nobody listens on (bound, then closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def members_now(client: ApiClient, audience_id: str) -> set[str]:
    """The audience's members through the export."""
    answer = client.get(f"/v1/audiences/{audience_id}/export", params={"format": "csv"})
    assert answer.status_code == 200, answer.text
    return set(answer.text.splitlines()[1:])


def test_runs_streaming_and_static_writes_arrive_exactly_once_in_order(
    hooks_app: FastAPI, hooks: Tenant
) -> None:
    """Every entered and exited profile of batch runs, streaming profile writes and static
    writes arrives once (after dropping duplicate ids), each audience's revisions in order,
    each change naming its cause; the oracle is the members read after every step."""
    admin = hooks.admin
    batch = make_audience(admin, rule="age > 30")
    streaming = make_audience(admin, rule="plan = 'pro'", refresh_policy={"mode": "streaming"})
    listed = static(admin)
    audiences = {a["key"]: a["id"] for a in (batch, streaming, listed)}
    expected: dict[str, list[set[tuple[str, str]]]] = {key: [] for key in audiences}
    before = {key: set[str]() for key in audiences}

    def step() -> None:
        for key, audience_id in audiences.items():
            after = members_now(admin, audience_id)
            moved = {("entered", i) for i in after - before[key]}
            moved |= {("exited", i) for i in before[key] - after}
            if moved:
                expected[key].append(moved)
            before[key] = after

    def profile(external: str, **attributes: Any) -> None:
        answer = admin.put(f"/v1/profiles/{external}", json={"attributes": attributes})
        assert answer.status_code in (200, 201), answer.text

    with receiving() as receiver:
        made = webhook(admin, receiver.url, all=True)
        receiver.secrets.append(made["secret"])
        deliver(hooks_app, lambda: len(receiver.accepted) == 1)  # the (empty) full lists
        for n in range(6):
            profile(f"p{n}", age=20 + 5 * n, plan="free")
            step()
        assert admin.post(f"/v1/audiences/{batch['id']}/refresh").status_code == 202
        step()
        profile("p1", plan="pro")
        step()
        profile("p4", plan="pro", age=10)
        step()
        write(hooks_app, admin, listed["id"], "add", ["p1", "p2", "p3"])
        step()
        assert admin.post(f"/v1/audiences/{batch['id']}/refresh").status_code == 202
        step()
        profile("p1", plan="free")
        step()
        write(hooks_app, admin, listed["id"], "remove", ["p2"])
        step()
        total = sum(len(moved) for steps in expected.values() for moved in steps)
        deliver(hooks_app, lambda: len(receiver.changes()) >= total)
        deliver(
            hooks_app,
            lambda: hooks.admin.get(f"/v1/destinations/{made['id']}").json()["backlog"] == 0,
        )
    for key in audiences:
        by_revision: dict[int, set[tuple[str, str]]] = {}
        for audience_key, change, external, revision in receiver.changes():
            if audience_key == key:
                by_revision.setdefault(revision, set()).add((change, external))
        assert [by_revision[r] for r in sorted(by_revision)] == expected[key], key
    causes = {
        change["cause"]["kind"]
        for payload in receiver.accepted
        for section in payload["data"]["audiences"]
        for change in section["changes"]
    }
    assert causes == {"run", "stream", "write"}
    assert len(receiver.requests) == len(receiver.accepted)  # nothing was sent twice


def test_rotation_signs_with_both_secrets_for_the_overlap(
    hooks_app: FastAPI, hooks: Tenant
) -> None:
    """After ``rotate-secret`` each request carries two signatures: a receiver that knows
    only the old secret and one that knows only the new one both verify."""
    audience = static(hooks.admin)
    with receiving() as receiver:
        made = webhook(hooks.admin, receiver.url, audience_ids=[audience["id"]])
        rotated = hooks.admin.post(f"/v1/destinations/{made['id']}/rotate-secret")
        assert rotated.status_code == 200, rotated.text
        new = rotated.json()["secret"]
        assert new != made["secret"] and rotated.json()["previous_expires_at"] is not None
        write(hooks_app, hooks.admin, audience["id"], "add", ["a"])
        receiver.secrets.append(made["secret"])
        deliver(hooks_app, lambda: len(receiver.requests) >= 1)
    for request in receiver.requests:
        assert len(request.headers["webhook-signature"].split(" ")) == 2
        Webhook(made["secret"]).verify(request.body, request.headers)
        Webhook(new).verify(request.body, request.headers)


def test_reset_sends_the_full_list_again_and_redelivery_keeps_the_id(
    hooks_app: FastAPI, hooks: Tenant
) -> None:
    """``reset`` sends every member again as ``entered`` (a snapshot); redelivering one
    message sends the same ``webhook-id`` and body (the receiver drops it); redelivering since
    a time counts what it put back; a test message is signed and logged."""
    audience = static(hooks.admin)
    write(hooks_app, hooks.admin, audience["id"], "add", ["a", "b"])
    with receiving() as receiver:
        made = webhook(hooks.admin, receiver.url, audience_ids=[audience["id"]])
        receiver.secrets.append(made["secret"])
        deliver(hooks_app, lambda: len(receiver.accepted) == 1)
        write(hooks_app, hooks.admin, audience["id"], "remove", ["a"])
        deliver(hooks_app, lambda: len(receiver.accepted) == 2)
        reset = hooks.admin.post(f"/v1/destinations/{made['id']}/reset")
        assert reset.status_code == 200, reset.text
        deliver(hooks_app, lambda: len(receiver.accepted) == 3)
        section = receiver.accepted[2]["data"]["audiences"][0]
        assert section["snapshot"] is True
        assert [(c["change"], c["id"]) for c in section["changes"]] == [("entered", "b")]
        log = hooks.admin.get(f"/v1/destinations/{made['id']}/deliveries").json()["data"]
        oldest = log[-1]
        again = hooks.admin.post(
            f"/v1/destinations/{made['id']}/deliveries/{oldest['id']}/redeliver"
        )
        assert again.status_code == 202, again.text
        deliver(hooks_app, lambda: len(receiver.requests) == 4)
        assert receiver.requests[3].headers["webhook-id"] == oldest["id"]
        assert receiver.requests[3].body == receiver.requests[0].body
        assert len(receiver.accepted) == 3  # a duplicate, dropped by id
        since = hooks.admin.post(
            f"/v1/destinations/{made['id']}/redeliver", json={"since": oldest["created_at"]}
        )
        assert since.status_code == 202 and since.json() == {"redelivered": 3}
        deliver(hooks_app, lambda: len(receiver.requests) == 7)
        tested = hooks.admin.post(f"/v1/destinations/{made['id']}/test")
        assert tested.status_code == 200, tested.text
        assert tested.json()["delivered"] is True
        assert receiver.requests[-1].verified
        assert receiver.requests[-1].payload["type"] == "destination.test"
    assert len(receiver.accepted) == 4


def test_file_destinations_write_full_lists_and_changes(hooks_app: FastAPI, hooks: Tenant) -> None:
    """A ``full`` destination writes every member per audience on its schedule; a
    ``changes`` one writes the first list then who entered and exited; Parquet reads back."""
    audience = static(hooks.admin)
    write(hooks_app, hooks.admin, audience["id"], "add", ["a", "b"])
    root: Path = hooks_app.state.settings.destination_file_root
    folder = f"t-{hooks.slug}"
    made = {}
    for mode, fmt in (("full", "csv"), ("changes", "ndjson"), ("changes", "parquet")):
        answer = hooks.admin.post(
            "/v1/destinations",
            json={
                "name": f"{mode}-{fmt}",
                "kind": "file",
                "path": f"{folder}/{mode}-{fmt}",
                "format": fmt,
                "mode": mode,
                "subscription": {"audience_ids": [audience["id"]]},
            },
        )
        assert answer.status_code == 201, answer.text
        assert answer.json()["secret"] is None
        made[(mode, fmt)] = answer.json()
    run_files(hooks_app)
    write(hooks_app, hooks.admin, audience["id"], "remove", ["a"])
    for destination in made.values():
        assert hooks.admin.post(f"/v1/destinations/{destination['id']}/reset").status_code == 200
    # reset makes each due at once; full mode writes the list again, changes mode the list too
    run_files(hooks_app)
    full = sorted((root / folder / "full-csv").glob("*.csv"))
    assert [p.read_text().splitlines() for p in full] == [["id", "a", "b"], ["id", "b"]]
    changes = sorted((root / folder / "changes-ndjson").glob("*.ndjson"))
    first = [json.loads(line) for line in changes[0].read_text().splitlines()]
    assert [(r["id"], r["change"]) for r in first] == [("a", "entered"), ("b", "entered")]
    parquet = sorted((root / folder / "changes-parquet").glob("*.parquet"))
    with duckdb.connect() as con:
        rows = con.execute(f"SELECT id, change FROM read_parquet('{parquet[0]}')").fetchall()
    assert rows == [("a", "entered"), ("b", "entered")]
    assert not list((root / folder).rglob(".tmp-*"))  # every file renamed into place
    # A file written is a delivered attempt, though it has no HTTP status.
    logged = [
        (d["status"], d["last_status"])
        for one in made.values()
        for d in hooks.admin.get(f"/v1/destinations/{one['id']}/deliveries").json()["data"]
    ]
    assert logged and all(status == "delivered" for status, _ in logged)
    metrics = hooks.anonymous.get("/metrics").text
    assert metric(
        metrics, 'audiences_destination_attempts_total{kind="file",outcome="delivered"}'
    ) >= len(logged)
    assert 'audiences_destination_attempts_total{kind="file",outcome="failed"}' not in metrics


def run_files(app: FastAPI) -> None:
    """What the scheduler does for due file destinations, then the jobs."""
    with app.state.session_factory.begin() as session:
        schedule.queue_deliveries(session, now=utcnow())
    factories.run_jobs(app, outbox.DELIVER_HANDLER)


def metric(text: str, name: str) -> float:
    """The value of one sample in a Prometheus exposition."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split(" ")[-1])
    raise AssertionError(f"{name} not in /metrics")


def test_file_destination_refusals_and_test_file(hooks_app: FastAPI, hooks: Tenant) -> None:
    """A path leaving the root is refused; a file destination has no secret to rotate; its
    test writes a file; a test message is never redelivered."""
    audience = static(hooks.admin)
    base = {"kind": "file", "subscription": {"audience_ids": [audience["id"]]}}
    for bad in ("../outside", "/etc", "a/../../b"):
        refused = hooks.admin.post("/v1/destinations", json={**base, "name": bad, "path": bad})
        assert refused.status_code == 422 and refused.json()["code"] == "path_not_allowed", bad
    made = hooks.admin.post(
        "/v1/destinations", json={**base, "name": "files", "path": f"t-{hooks.slug}/tests"}
    ).json()
    rotate = hooks.admin.post(f"/v1/destinations/{made['id']}/rotate-secret")
    assert rotate.status_code == 409 and rotate.json()["code"] == "destination_not_webhook"
    tested = hooks.admin.post(f"/v1/destinations/{made['id']}/test")
    assert tested.status_code == 200 and tested.json()["delivered"] is True
    root: Path = hooks_app.state.settings.destination_file_root
    assert [p.name[:5] for p in (root / f"t-{hooks.slug}" / "tests").iterdir()] == ["test-"]
    again = hooks.admin.post(
        f"/v1/destinations/{made['id']}/deliveries/{tested.json()['delivery']['id']}/redeliver"
    )
    assert again.status_code == 409 and again.json()["code"] == "delivery_is_test"


def test_a_test_message_is_sent_after_its_transaction_commits(
    hooks_app: FastAPI, hooks: Tenant
) -> None:
    """While the receiver holds the test request, the message is committed (``sending``, so
    shown by the delivery log, filtered by it too) and the database takes writes: a slow
    receiver holds no transaction open."""
    audience = static(hooks.admin)
    seen: list[tuple[str | None, str | None]] = []
    shown: list[tuple[int, list[str]]] = []

    def look(number: int, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
        with hooks_app.state.session_factory.begin() as session:
            status = session.scalar(
                select(DestinationMessageRow.status).where(
                    DestinationMessageRow.id == headers["webhook-id"]
                )
            )
            touched = session.execute(  # a write: the request's transaction holds no lock
                update(DestinationRow)
                .where(DestinationRow.id == made["id"])
                .values(last_error=None)
                .returning(DestinationRow.id)
            ).scalar()
        seen.append((status, touched))
        log = f"/v1/destinations/{made['id']}/deliveries"
        for path in (log, f"{log}?status=sending", f"{log}/{headers['webhook-id']}"):
            answer = hooks.admin.get(path)
            body = answer.json()
            shown.append((answer.status_code, [d["status"] for d in body.get("data", [body])]))
        return 200, {}

    with receiving(look) as receiver:
        made = webhook(hooks.admin, receiver.url, audience_ids=[audience["id"]])
        receiver.secrets.append(made["secret"])
        tested = hooks.admin.post(f"/v1/destinations/{made['id']}/test")
    assert tested.status_code == 200, tested.text
    assert tested.json()["delivered"] is True
    assert seen == [("sending", made["id"])]
    assert shown == [(200, ["sending"])] * 3
    logged = hooks.admin.get(
        f"/v1/destinations/{made['id']}/deliveries/{tested.json()['delivery']['id']}"
    ).json()
    assert logged["status"] == "delivered" and len(logged["attempt_log"]) == 1


def test_two_file_destinations_never_share_a_folder(hooks_app: FastAPI, hooks: Tenant) -> None:
    """Their files would be named alike and overwrite each other: a second destination on the
    same folder (however the path is spelled, in any workspace) is refused with 409; a
    destination keeps its own folder when it is replaced."""
    audience = static(hooks.admin)
    folder = f"t-{hooks.slug}/shared"
    first = {"kind": "file", "subscription": {"audience_ids": [audience["id"]]}, "path": folder}
    made = hooks.admin.post("/v1/destinations", json={**first, "name": "one"})
    assert made.status_code == 201, made.text
    with make_tenant(hooks_app) as neighbour:
        theirs = static(neighbour.admin)
        for client, subscription, spelled in (
            (hooks.admin, audience, f"{folder}/"),
            (hooks.admin, audience, f"t-{hooks.slug}/./shared"),
            (neighbour.admin, theirs, folder),
        ):
            body = {**first, "path": spelled, "name": "two"}
            body["subscription"] = {"audience_ids": [subscription["id"]]}
            refused = client.post("/v1/destinations", json=body)
            assert refused.status_code == 409, (spelled, refused.text)
            assert refused.json()["code"] == "destination_path_taken"
    elsewhere = {**first, "name": "two", "path": f"{folder}-2"}
    other = hooks.admin.post("/v1/destinations", json=elsewhere)
    assert other.status_code == 201, other.text
    moved = hooks.admin.patch(
        f"/v1/destinations/{other.json()['id']}",
        content=f'{{"path": "{folder}"}}'.encode(),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert moved.status_code == 409 and moved.json()["code"] == "destination_path_taken"
    kept = hooks.admin.put(
        f"/v1/destinations/{made.json()['id']}", json={**first, "name": "renamed"}
    )
    assert kept.status_code == 200, kept.text
