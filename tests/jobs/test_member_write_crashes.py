"""JSON membership writes survive SIGKILL: a real server killed at random points, while it
accepts writes (the body logged or written, the job inserted, the commit) and while its worker
applies them, then restarted; every accepted write is applied exactly once and whole, and no
body is kept once its write is over."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from audiences.services import intake_log, static_members
from audiences.store.tables import JobRow
from tests.jobs.test_import_crashes import Server, _wait_for, make_server

__all__ = ["make_server"]  # the fixture, shared with the import crash tests

BLOCKS = 30
SIZE = 2_000


def test_json_writes_killed_at_random_points_apply_exactly_once(
    make_server: Callable[[int], Server],
    isolated_factory: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    server = make_server(1)
    _, client, audience_id = _seeded_static_audience(server)
    url = f"/v1/audiences/{audience_id}/members"
    rng = random.Random(11)
    accepted: dict[int, str] = {}
    kills = 0
    for block in range(BLOCKS):
        killer = None
        if rng.random() < 0.4:
            killer = threading.Timer(rng.uniform(0.0, 0.02), server.kill)
            killer.start()
        body = {"action": "add", "ids": [f"b{block}-{i}" for i in range(SIZE)]}
        try:
            response = client.post(url, json=body)
        except httpx.TransportError:
            response = None
        if response is not None and response.status_code == 202:
            accepted[block] = response.json()["id"]
        if killer is not None:
            killer.join()
            kills += 1
            server.start()
    assert kills >= 5 and len(accepted) >= BLOCKS // 2

    done = _finished_jobs(isolated_factory, audience_id)
    members = set(client.get(f"/v1/audiences/{audience_id}/export").text.splitlines()[1:])
    present = {block for block in range(BLOCKS) if f"b{block}-0" in members}
    expected = {"seed"} | {f"b{block}-{i}" for block in present for i in range(SIZE)}
    assert members == expected  # every write whole or absent
    assert set(accepted) <= present  # every 202 applied
    assert len(done) == len(present) + 1  # once each: one job per write that got in
    assert sum(row.result["added"] for row in done) == len(members)
    left = static_members.body_file(server.data_dir, done[0].workspace_id, "x").parent
    named = {f"{row.id}.json" for row in done}
    assert not named & {path.name for path in left.glob("*.json")}  # applied bodies removed
    log = intake_log.directory(server.data_dir)  # SQLite: the intake drops its done segments
    _wait_for(
        lambda: not any(_holds_records(path) for _, path in intake_log.segments(log)),
        "the intake kept segments whose writes are over",
    )
    client.close()


BURSTS = 4
BURST = 4


def test_writes_answered_202_then_killed_before_their_commit_are_applied_after_restart(
    make_server: Callable[[int], Server],
    isolated_factory: sessionmaker[Session],
    isolated_database_url: str,
) -> None:
    """On SQLite a 202 may come before the commit (the write intake): killed right after a
    burst of answers, the server replays its log at the next start, each write exactly once."""
    server = make_server(1)
    token, client, audience_id = _seeded_static_audience(server)
    url = f"/v1/audiences/{audience_id}/members"
    accepted: list[str] = []
    for burst in range(BURSTS):
        for i in range(BURST):
            body = {"action": "add", "ids": [f"b{burst}-{i}-{n}" for n in range(SIZE)]}
            response = client.post(url, json=body)
            assert response.status_code == 202, response.text
            accepted.append(response.json()["id"])
        server.kill()  # at once: the last writes are in the log, not yet committed
        server.start()
        client = server.client(token)

    done = _finished_jobs(isolated_factory, audience_id)
    assert set(accepted) <= {row.id for row in done}  # every 202 became its job
    assert len(done) == len(accepted) + 1  # once each
    assert sorted(row.payload["seq"] for row in done) == list(range(1, len(done) + 1))
    members = set(client.get(f"/v1/audiences/{audience_id}/export").text.splitlines()[1:])
    expected = {"seed"} | {
        f"b{burst}-{i}-{n}" for burst in range(BURSTS) for i in range(BURST) for n in range(SIZE)
    }
    assert members == expected
    if isolated_database_url.startswith("sqlite"):
        assert "replayed" in server.log.read_text()  # the log was needed at least once
    client.close()


def _seeded_static_audience(server: Server) -> tuple[str, httpx.Client, str]:
    """Start ``server``; a write key, a client with it, and a static audience holding "seed"
    (written the ordinary way, so later writes may take the write intake)."""
    server.start()
    token = server.token()
    client = server.client(token)
    created = client.post("/v1/audiences", json={"key": "l", "name": "l", "kind": "static"})
    audience_id = str(created.json()["id"])
    seed = {"action": "add", "ids": ["seed"]}
    assert client.post(f"/v1/audiences/{audience_id}/members", json=seed).status_code == 202
    return token, client, audience_id


def _holds_records(segment: Path) -> bool:
    try:
        return segment.stat().st_size > 0
    except FileNotFoundError:  # dropped meanwhile
        return False


def _finished_jobs(factory: sessionmaker[Session], audience_id: str) -> list[JobRow]:
    """The audience's jobs, once every one has ended; none of them failed."""

    def jobs() -> list[JobRow]:
        with factory() as session:
            rows = list(session.scalars(select(JobRow).where(JobRow.subject_id == audience_id)))
            session.expunge_all()
            return rows

    _wait_for(
        lambda: all(row.state in ("succeeded", "failed") for row in jobs()),
        "the writes never finished",
    )
    done = jobs()
    assert [row.last_error for row in done if row.state != "succeeded"] == []
    return done
