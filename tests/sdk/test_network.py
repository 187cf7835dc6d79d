"""The SDK over real sockets: retries against a tiny receiver that answers 503 / 429 / 409 with
``Retry-After``, a server that is down, an upload cut halfway, and a real Audiences server
behind a proxy that loses the answer to a create (the retry must not create it twice)."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from audiences.sdk import Client, RateLimited, Retry, ServerError, Unreachable
from tests.e2e.conftest import Server, free_port
from tests.sdk.receivers import Reply, proxy, scripted, serving

FAST = Retry(attempts=4, backoff=0.01, max_backoff=0.05)
NOW = datetime.now(UTC).isoformat()
GROUP = {
    "id": "g1", "name": "G", "description": None, "audience_count": 0, "version": 1,
    "created_at": NOW, "updated_at": NOW,
}  # fmt: skip


def test_503_then_200_honours_retry_after() -> None:
    replies = scripted(Reply(503, {"title": "busy"}, {"Retry-After": "1"}), Reply(200, GROUP))
    with serving(replies) as (url, log), Client(url, key="k", retry=FAST) as client:
        started = time.monotonic()
        assert client.groups.get("g1").name == "G"
        waited = time.monotonic() - started
    assert len(log) == 2 and waited >= 0.9


def test_a_create_retried_after_429_and_409_in_flight_keeps_its_idempotency_key() -> None:
    in_flight = {"code": "idempotency_in_flight", "title": "Conflict", "status": 409,
                 "detail": "still running", "request_id": "r"}  # fmt: skip
    replies = scripted(
        Reply(429, {"title": "slow down"}, {"Retry-After": "0"}),
        Reply(409, in_flight, {"Retry-After": "0"}),
        Reply(201, GROUP),
    )
    with serving(replies) as (url, log), Client(url, key="k", retry=FAST) as client:
        client.groups.create(name="G")
        client.groups.create(name="G")
    keys = [arrived.headers["idempotency-key"] for arrived in log]
    assert len(keys) == 4 and keys[0] == keys[1] == keys[2] != keys[3]


def test_errors_that_would_apply_twice_are_not_retried_and_429_gives_up() -> None:
    with (
        serving(scripted(Reply(500, {"title": "boom"}))) as (url, log),
        Client(url, key="k", retry=FAST) as client,
        pytest.raises(ServerError),
    ):
        client.audiences.refresh("a1")
    assert len(log) == 1
    with (
        serving(scripted(Reply(429, None, {"Retry-After": "0"}))) as (url, log),
        Client(url, key="k", retry=FAST) as client,
        pytest.raises(RateLimited) as caught,
    ):
        client.groups.get("g1")
    assert len(log) == 4 and caught.value.code == "http_429"


def test_a_server_that_is_down_is_unreachable_after_retries() -> None:
    client = Client(f"http://127.0.0.1:{free_port()}", key="k", retry=FAST)
    with client, pytest.raises(Unreachable) as caught:
        client.groups.list().first_page()
    assert caught.value.code == "unreachable"


def test_an_upload_cut_halfway_is_sent_again_whole_under_the_same_key(tmp_path: Path) -> None:
    path = tmp_path / "ids.txt"
    path.write_bytes(b"".join(b"id-%d\n" % number for number in range(400_000)))
    job = {"id": "j1"}
    replies = scripted(Reply(0, cut_after=1 << 20), Reply(202, job))
    with (
        serving(replies) as (url, log),
        Client(url, key="k", retry=FAST) as client,
        pytest.raises(ValidationError),  # the canned job is not a whole Job: parsed, refused
    ):
        client.imports.create("a1", path)
    assert len(log) == 2
    assert len(log[0].body) < path.stat().st_size == len(log[1].body)
    assert log[0].headers["idempotency-key"] == log[1].headers["idempotency-key"]


def test_a_create_whose_answer_was_lost_is_created_once(live_server: Server) -> None:
    key = f"once-{uuid.uuid4().hex[:8]}"
    with (
        serving(proxy(live_server.base_url, lose_first="POST")) as (url, log),
        Client(url, key=live_server.token, retry=FAST) as client,
    ):
        created = client.audiences.create(key=key, name="Once", kind="static")
    assert [arrived.method for arrived in log] == ["POST", "POST"]
    with Client(live_server.base_url, key=live_server.token) as client:
        page = client.audiences.list(key=key).first_page()
    assert page.total == 1 and page.data[0].id == created.id


def test_a_large_import_streams_from_disk_and_is_followed_to_the_end(
    live_server: Server, tmp_path: Path
) -> None:
    path = tmp_path / "ids.csv"
    path.write_bytes(b"id\n" + b"".join(b"big-%d\n" % number for number in range(20_000)))
    with Client(live_server.base_url, key=live_server.token) as client:
        audience = client.audiences.create(
            key=f"big-{uuid.uuid4().hex[:6]}", name="Big", kind="static"
        )
        job = client.imports.create(audience, path)
        seen: list[int] = []
        done = client.jobs.wait(
            job, on_progress=lambda current: seen.append(current.progress.processed)
        )
        assert done.state == "succeeded", done.last_error
        assert seen == sorted(seen) and seen[-1] == 20_000
        assert client.audiences.get(audience.id).size == 20_000
        assert sum(1 for _ in client.audiences.members(audience, limit=200)) == 20_000
