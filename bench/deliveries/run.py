"""Webhook deliveries beside bare HTTP clients, and the delay from a change to its delivery.

    .venv/bin/python -m bench.deliveries.run            # 200,000 changes a round, 10 s of writes
    .venv/bin/python -m bench.deliveries.run --rounds 7 --changes 500000 --seconds 30

One run, a receiver on 127.0.0.1 in a process of its own (``receiver.py``: parses each body,
answers 204 at once):

1. Throughput: a batch run makes ``--changes`` profiles enter a webhook's audience; the
   delivery job (``destinations.deliver``: changes from the outbox into messages of 1,000,
   each signed, sent, logged) runs until the receiver holds them all. Beside it two bare
   clients, keep-alive, POST the very same message bodies to the same receiver: an
   ``httpx.Client`` (the reference issue #15 names) and a ``urllib3.PoolManager`` (the
   library our sender posts with, so the nearest tool doing the same work).
2. Delay under load: streaming profile writes for ``--seconds`` (each moves a streaming
   audience) with the server's embedded workers delivering as they go; the delay of each
   message is its delivery time minus its first change's commit time (``first_change_at``).
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import urllib3
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from audiences.api.app import create_app
from audiences.config import Settings
from audiences.jobs.handlers import HANDLERS
from audiences.jobs.worker import Worker, WorkerPool
from audiences.kit.heap import freeze_startup_objects
from audiences.kit.threads import shorten_thread_switches
from audiences.schemas.api_keys import ApiKeyCreate, Role
from audiences.services import api_keys, workspaces
from audiences.store.tables import DestinationMessageBodyRow, DestinationMessageRow
from bench.deliveries.receiver import Receiver, receiver


def main() -> None:
    """Run both parts and print the figures."""
    parser = argparse.ArgumentParser()
    # 200 messages a round: at 50 (a round of ~0.15 s) one scheduling hiccup moved a ratio.
    parser.add_argument("--changes", type=int, default=200_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, receiver() as counter:
        settings = Settings(
            data_dir=Path(folder),
            egress_allow_private=True,
            webhook_batch_wait_seconds=0.2,
            worker_threads=0,
            rate_limit="1000000/minute",
        )
        app = create_app(settings)
        client = _client(app)
        freeze_startup_objects()  # as `audiences serve` does
        shorten_thread_switches()
        throughput(app, client, counter, args.changes, args.rounds)
        delay(app, client, counter.url, args.seconds)


def _client(app: Any) -> TestClient:
    with app.state.session_factory.begin() as session:
        workspace = workspaces.ensure(session, slug="bench")
        _, token = api_keys.create(
            session, workspace=workspace, data=ApiKeyCreate(name="b", role=Role.ADMIN), actor="b"
        )
    client = TestClient(app, headers={"Authorization": f"Bearer {token}"})
    for name, kind in (("plan", "string"), ("score", "integer")):
        client.put(f"/v1/attributes/{name}", json={"type": kind}).raise_for_status()
    return client


def _profiles(client: TestClient, count: int, prefix: str, **attributes: Any) -> None:
    for start in range(0, count, 5_000):
        records = [
            {"id": f"{prefix}{n}", "attributes": attributes}
            for n in range(start, min(count, start + 5_000))
        ]
        client.post("/v1/profiles/batch", json={"profiles": records}).raise_for_status()


def _hook(client: TestClient, url: str, audience: str) -> str:
    made = client.post(
        "/v1/destinations",
        json={
            "name": f"hook-{audience}",
            "kind": "webhook",
            "url": url,
            "subscription": {"audience_ids": [audience]},
        },
    )
    made.raise_for_status()
    return str(made.json()["id"])


def throughput(app: Any, client: TestClient, counter: Receiver, changes: int, rounds: int) -> None:
    """Part 1: ours against a bare httpx client posting the same bodies, ``rounds`` times
    (each round ``changes`` new profiles enter the audience)."""
    audience = client.post(
        "/v1/audiences",
        json={"key": "pros", "name": "Pros", "kind": "dynamic", "rule": "plan = 'pro'"},
    ).json()["id"]
    url = counter.url
    destination = _hook(client, url, audience)
    worker = Worker(
        session_factory=app.state.session_factory,
        settings=app.state.settings,
        registry=HANDLERS,
        runtime=app.state.runtime,
    )
    while worker.run_once():  # the audience's first run and the first list: both empty
        pass
    ratios: dict[str, list[float]] = {"httpx": [], "urllib3": []}
    for number in range(rounds):
        _profiles(client, changes, f"t{number}-", plan="pro")
        # The run is evaluated in the request; the delivery job it queued waits for the clock.
        client.post(f"/v1/audiences/{audience}/refresh").raise_for_status()
        with app.state.session_factory() as session:
            after = session.scalar(
                select(func.coalesce(func.max(DestinationMessageRow.seq), 0)).where(
                    DestinationMessageRow.destination_id == destination
                )
            )
        before = counter.changes
        started, cpu = time.perf_counter(), time.process_time()
        deadline = time.monotonic() + 600
        while counter.changes - before < changes:
            assert time.monotonic() < deadline, "the deliveries never arrived"
            if not worker.run_once():
                time.sleep(0.001)
        ours, ours_cpu = time.perf_counter() - started, time.process_time() - cpu
        with app.state.session_factory() as session:
            bodies = list(
                session.scalars(
                    select(DestinationMessageBodyRow.body)
                    .join(DestinationMessageRow)
                    .where(DestinationMessageRow.destination_id == destination)
                    .where(DestinationMessageRow.seq > after)
                    .where(DestinationMessageRow.changes > 0)
                    .order_by(DestinationMessageRow.seq)
                )
            )
        # Two bare clients post the same bodies: httpx (issue #15's reference) and urllib3
        # (what our sender posts with); which goes first alternates from round to round.
        bare = {}
        for name in sorted(BARE, reverse=number % 2 == 1):
            before = counter.changes
            bare[name] = _bare(BARE[name], url, bodies)
            assert counter.changes - before == changes
        ratios["httpx"].append(bare["httpx"][0] / ours)
        ratios["urllib3"].append(bare["urllib3"][0] / ours)
        per = len(bodies) / 1000
        figures = ", ".join(
            f"bare {name} {changes / took:,.0f} changes/s ({spent / per:.1f} ms CPU a message, "
            f"ratio {took / ours:.2f}x)"
            for name, (took, spent) in bare.items()
        )
        print(
            f"throughput round {number + 1}: {changes:,} changes in {len(bodies)} messages; "
            f"ours {changes / ours:,.0f} changes/s ({ours_cpu / per:.1f} ms CPU a message); "
            f"{figures}",
            flush=True,
        )
    for name, found in ratios.items():
        print(
            f"  ratio to bare {name} over {rounds} rounds: median {statistics.median(found):.2f}x, "
            f"min {min(found):.2f}x, max {max(found):.2f}x"
        )


def _post_httpx(url: str, bodies: list[str]) -> None:
    with httpx.Client() as bare:
        for body in bodies:
            bare.post(url, content=body, headers=JSON)


def _post_urllib3(url: str, bodies: list[str]) -> None:
    with urllib3.PoolManager(maxsize=1, retries=False) as bare:
        for body in bodies:
            bare.request("POST", url, body=body.encode(), headers=JSON)


JSON = {"content-type": "application/json"}
BARE = {"httpx": _post_httpx, "urllib3": _post_urllib3}
"""A bare client of each library, keep-alive, posting the bodies one after another."""


def _bare(
    post: Callable[[str, list[str]], None], url: str, bodies: list[str]
) -> tuple[float, float]:
    """Seconds and CPU seconds ``post`` takes to send ``bodies`` to ``url``."""
    started, cpu = time.perf_counter(), time.process_time()
    post(url, bodies)
    return time.perf_counter() - started, time.process_time() - cpu


def delay(app: Any, client: TestClient, url: str, seconds: float) -> None:
    """Part 2: streaming writes with workers delivering; delay quantiles per message."""
    audience = client.post(
        "/v1/audiences",
        json={
            "key": "scorers",
            "name": "S",
            "kind": "dynamic",
            "rule": "score > 50",
            "refresh_policy": {"mode": "streaming"},
        },
    ).json()["id"]
    destination = _hook(client, url, audience)
    pool = WorkerPool(
        session_factory=app.state.session_factory,
        settings=app.state.settings,
        threads=2,
        runtime=app.state.runtime,
    )
    pool.start()
    writes = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        records = [
            {"id": f"s{random.randrange(5_000)}", "attributes": {"score": random.randrange(100)}}
            for _ in range(20)
        ]
        client.post("/v1/profiles/batch", json={"profiles": records}).raise_for_status()
        writes += 1
    elapsed = time.perf_counter() - started
    deadline = time.monotonic() + 60
    while (
        client.get(f"/v1/destinations/{destination}").json()["backlog"]
        and time.monotonic() < deadline
    ):
        time.sleep(0.1)
    pool.stop()
    with app.state.session_factory() as session:
        rows = session.execute(
            select(DestinationMessageRow.first_change_at, DestinationMessageRow.delivered_at)
            .where(DestinationMessageRow.destination_id == destination)
            .where(DestinationMessageRow.changes > 0)
        ).all()
    delays = sorted((d - f).total_seconds() for f, d in rows if f and d)
    p50 = statistics.median(delays)
    p99 = delays[min(len(delays) - 1, int(0.99 * len(delays)))]
    print(
        f"delay under load: {writes / elapsed:,.0f} write calls/s (20 profiles each), "
        f"{len(delays)} messages"
    )
    print(
        f"  change commit -> delivered: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
        f"max {delays[-1] * 1000:.0f} ms (batch wait 200 ms)"
    )


if __name__ == "__main__":
    main()
