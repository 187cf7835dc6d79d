"""A real server killed (SIGKILL) in the middle of webhook deliveries, several times: the
receiver ends with every change exactly once after dropping duplicates by ``webhook-id``,
and none that did not happen."""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Server, start_server, stop_server
from tests.webhook_receiver import receiving

ROUNDS = 3
ENV = {
    "AUDIENCES_EGRESS_ALLOW_PRIVATE": "true",
    "AUDIENCES_WEBHOOK_RETRY_SCHEDULE": "0,0.2,0.5,1,1,1,1,1,1,1,1,1",
    "AUDIENCES_WEBHOOK_BATCH_WAIT_SECONDS": "0",
    "AUDIENCES_WEBHOOK_BATCH_SIZE": "5",
    "AUDIENCES_WEBHOOK_TIMEOUT_SECONDS": "5",
    "AUDIENCES_JOB_LEASE_SECONDS": "2",
    "AUDIENCES_JOB_POLL_SECONDS": "0.05",
    "AUDIENCES_SCHEDULER_SECONDS": "1",
}


def _wait(condition: Callable[[], bool], message: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


def _client(server: Server) -> httpx.Client:
    return httpx.Client(
        base_url=server.base_url, headers={"Authorization": f"Bearer {server.token}"}, timeout=30
    )


def test_sigkill_during_deliveries_loses_and_invents_nothing(
    tmp_path: Path, e2e_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each round replaces the list's members (some leave, eight enter: two messages of at
    most five changes); the receiver holds its answer to the round's first message while the
    server is killed, then restarted. Afterwards every round's changes arrived, once each."""
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    data_dir = tmp_path / "data"
    hold = threading.Event()

    def script(number: int, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
        while hold.is_set():  # answer only once the test clears it: the sender is dead by then
            time.sleep(0.02)
        return 200, {}

    expected: list[set[tuple[str, str]]] = []
    members: set[str] = set()
    server = start_server(data_dir, e2e_database_url, demo_profiles=0)
    try:
        with receiving(script) as receiver, _client(server) as client:
            key = f"crash-{uuid.uuid4().hex[:8]}"
            made = client.post("/v1/audiences", json={"key": key, "name": "C", "kind": "static"})
            assert made.status_code == 201, made.text
            audience = made.json()["id"]
            hook = client.post(
                "/v1/destinations",
                json={
                    "name": f"hook-{key}",
                    "kind": "webhook",
                    "url": receiver.url,
                    "subscription": {"audience_ids": [audience]},
                },
            )
            assert hook.status_code == 201, hook.text
            receiver.secrets.append(hook.json()["secret"])
            _wait(lambda: len(receiver.accepted) == 1, "the first (empty) list never came")
            for round_ in range(ROUNDS):
                leaving = set(sorted(members)[:2])
                entering = {f"r{round_}-{n}" for n in range(8)}
                after = (members - leaving) | entering
                expected.append(
                    {("exited", i) for i in leaving} | {("entered", i) for i in entering}
                )
                members = after
                seen = receiver.arrived
                hold.set()
                with _client(server) as writer:
                    written = writer.post(
                        f"/v1/audiences/{audience}/members",
                        json={"action": "replace", "ids": sorted(after)},
                    )
                    assert written.status_code == 202, written.text
                _wait(lambda s=seen: receiver.arrived > s, f"round {round_}: nothing arrived")
                server.process.send_signal(signal.SIGKILL)
                server.process.wait(30)
                hold.clear()
                stop_server(server)
                server = start_server(data_dir, e2e_database_url, demo_profiles=0)
            _wait(lambda: receiver.members(key) == members, "the receiver never caught up", 90)
            _wait(lambda: _backlog(server, hook.json()["id"]) == 0, "messages still waiting", 90)
    finally:
        stop_server(server)
    by_revision: dict[int, set[tuple[str, str]]] = {}
    for _, change, external, revision in receiver.changes():
        assert (change, external) not in by_revision.get(revision, set()), "a change twice"
        by_revision.setdefault(revision, set()).add((change, external))
    assert [by_revision[r] for r in sorted(by_revision)] == expected
    assert len(receiver.requests) > len(receiver.accepted)  # some came twice: the kills hit
    assert all(request.verified for request in receiver.requests)


def _backlog(server: Server, destination_id: str) -> int:
    with _client(server) as client:
        return int(client.get(f"/v1/destinations/{destination_id}").json()["backlog"])
