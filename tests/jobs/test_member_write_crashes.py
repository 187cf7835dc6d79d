"""JSON membership writes survive SIGKILL: a real server killed at random points, while it
accepts writes (the job and its write row inserted, the commit) and while its worker applies
them, then restarted; every accepted write is applied exactly once and whole, and no write keeps
its ids once it is applied."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from audiences.store.tables import JobRow, MemberWriteRow
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
    unkilled: set[int] = set()
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
        if killer is None:
            unkilled.add(block)
        else:
            killer.join()
            kills += 1
            server.start()
    # The seeded plan kills during at least five writes; a write no kill could reach is accepted
    # (how many of the others got in before their kill depends on timing, not asserted).
    assert kills >= 5 and unkilled <= set(accepted)

    done = _finished_jobs(isolated_factory, audience_id)
    members = set(client.get(f"/v1/audiences/{audience_id}/export").text.splitlines()[1:])
    present = {block for block in range(BLOCKS) if f"b{block}-0" in members}
    expected = {"seed"} | {f"b{block}-{i}" for block in present for i in range(SIZE)}
    assert members == expected  # every write whole or absent
    assert set(accepted) <= present  # every 202 applied
    assert len(done) == len(present) + 1  # once each: one job per write that got in
    assert sum(row.result["added"] for row in done) == len(members)
    with isolated_factory() as session:
        kept = session.scalars(
            select(MemberWriteRow.seq).where(
                MemberWriteRow.audience_id == audience_id, MemberWriteRow.body.is_not(None)
            )
        ).all()
    assert kept == []  # applied writes keep no ids
    client.close()


def _seeded_static_audience(server: Server) -> tuple[str, httpx.Client, str]:
    """Start ``server``; a write key, a client with it, and a static audience holding "seed"."""
    server.start()
    token = server.token()
    client = server.client(token)
    created = client.post("/v1/audiences", json={"key": "l", "name": "l", "kind": "static"})
    audience_id = str(created.json()["id"])
    seed = {"action": "add", "ids": ["seed"]}
    assert client.post(f"/v1/audiences/{audience_id}/members", json=seed).status_code == 202
    return token, client, audience_id


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
