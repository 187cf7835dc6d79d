"""Streaming latency of a behavioural audience through the real HTTP server (issue #13).

Two measurements, on a server started with a short sweep interval
(``AUDIENCES_STREAMING_SWEEP_SECONDS``):

1. **Write -> visible.** For each profile: two ``purchase`` events, then the third, which makes
   it enter ``count(*) FILTER (WHERE event = 'purchase' AND timestamp > now() - INTERVAL 1
   HOUR) >= 3``. Timed from sending that third ``POST /v1/events`` to the answer of the first
   ``GET /v1/audiences/{id}/members/{profile}`` that shows it a member, read right after the
   write's answer; and how many reads that took (one, by design: a profile enters before the
   write that qualifies it returns).
2. **Expiry -> exit.** Profiles get three purchases timed "now", one after another a little
   apart, for the same rule over a window of a few seconds, so their window boundaries (the
   events' time plus the window) fall all over the sweep interval. A reader lists the
   audience's members every ``--poll`` seconds; a profile's exit delay is the time from its
   boundary to the first listing without it. The sweep interval bounds it (plus the sweep's
   own run and the polling step).

    .venv/bin/python -m bench.events.run --only streaming
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench.http import servers
from bench.http.client import Connection, call
from bench.http.measure import connect, pct

RULE = "count(*) FILTER (WHERE event = 'purchase' AND timestamp > now() - INTERVAL {window}) >= 3"


@dataclass
class Entered:
    """Write -> visible, per profile: seconds and reads."""

    write: list[float] = field(default_factory=list)  # the third POST, sent -> answered
    visible: list[float] = field(default_factory=list)  # that POST sent -> member read answered
    reads: list[int] = field(default_factory=list)


@dataclass
class Exited:
    """Expiry -> exit, per profile: seconds from its window boundary to the first listing
    without it; and profiles never seen as members before their boundary (should be none)."""

    delays: list[float] = field(default_factory=list)
    never_entered: int = 0
    listings: int = 0
    listing_seconds: list[float] = field(default_factory=list)


async def _audience(conn: Connection, key: str, window: str) -> str:
    body = {
        "key": key,
        "name": key,
        "kind": "dynamic",
        "rule": RULE.format(window=window),
        "refresh_policy": {"mode": "streaming"},
    }
    created = (await call(conn, "POST", "/v1/audiences", body, expect=201)).json()
    assert created["evaluation_mode"]["mode"] == "streaming", created["evaluation_mode"]
    return str(created["id"])


def _purchase(profile: str, when: datetime | None = None) -> dict[str, str]:
    event = {"profile_id": profile, "event": "purchase"}
    if when is not None:
        event["timestamp"] = when.isoformat()
    return event


async def entering(server: servers.Server, profiles: int) -> Entered:
    """Measurement 1."""
    conn = connect(server)
    audience = await _audience(conn, "buyers-1h", "1 HOUR")
    found = Entered()
    for n in range(profiles):
        profile = f"enter-{n}"
        two = {"events": [_purchase(profile), _purchase(profile)]}
        await call(conn, "POST", "/v1/events", two, expect=201)
        sent = time.perf_counter()
        await call(conn, "POST", "/v1/events", _purchase(profile), expect=201)
        answered = time.perf_counter()
        reads = 0
        while True:
            reads += 1
            path = f"/v1/audiences/{audience}/members/{profile}"
            if (await call(conn, "GET", path)).json()["member"]:
                break
        found.write.append(answered - sent)
        found.visible.append(time.perf_counter() - sent)
        found.reads.append(reads)
    await conn.close()
    return found


async def exiting(
    server: servers.Server, profiles: int, window: int, sweep: int, poll: float
) -> Exited:
    """Measurement 2."""
    conn = connect(server)
    audience = await _audience(conn, f"buyers-{window}s", f"{window} SECOND")
    boundaries: dict[str, float] = {}  # profile -> epoch seconds its events leave the window
    seen: set[str] = set()
    found = Exited()
    spacing = sweep * 2 / profiles  # boundaries spread over two sweep intervals

    async def write() -> None:
        writer = connect(server)
        for n in range(profiles):
            profile = f"exit-{n}"
            when = datetime.now(UTC)
            body = {"events": [_purchase(profile, when) for _ in range(3)]}
            await call(writer, "POST", "/v1/events", body, expect=201)
            boundaries[profile] = when.timestamp() + window
            await asyncio.sleep(spacing)
        await writer.close()

    async def read() -> None:
        deadline = time.time() + window + 2 * sweep + 4 * sweep + 30
        while time.time() < deadline:
            started = time.perf_counter()
            path = f"/v1/audiences/{audience}/members?limit=200"
            page = (await call(conn, "GET", path)).json()
            now = time.time()
            found.listings += 1
            found.listing_seconds.append(time.perf_counter() - started)
            members = {item["id"] for item in page["data"]}
            for profile, boundary in list(boundaries.items()):
                if profile in members:
                    if now < boundary:
                        seen.add(profile)
                    continue
                if now >= boundary and profile not in done:
                    done.add(profile)
                    if profile in seen:
                        found.delays.append(now - boundary)
                    else:
                        found.never_entered += 1
            if len(done) == profiles:
                return
            await asyncio.sleep(poll)

    done: set[str] = set()
    await asyncio.gather(write(), read())
    await conn.close()
    return found


def run(
    folder: Path, *, profiles: int, exits: int, window: int, sweep: int, poll: float
) -> Iterator[str]:
    """Both measurements on one server; Markdown lines for bench/README.md."""
    settings = {"AUDIENCES_STREAMING_SWEEP_SECONDS": str(sweep)}
    server = servers.start(servers.Tree.parse("src"), "A", folder / "streaming", settings)
    try:
        entered = asyncio.run(entering(server, profiles))
        exited = asyncio.run(exiting(server, exits, window, sweep, poll))
    finally:
        server.stop()
    ms = 1000
    yield ""
    yield (
        f"**3. Streaming latency** (one server process, sweep interval {sweep} s): write ->"
        f" visible for {profiles} profiles, expiry -> exit for {exits} profiles over a"
        f" {window} s window, members listed every {poll * ms:.0f} ms"
    )
    yield ""
    yield "| measurement | p50 | p99 | max |"
    yield "| --- | ---: | ---: | ---: |"
    for label, values in (
        ("third `POST /v1/events`, sent -> answered", entered.write),
        ("that write sent -> the member read that shows it answered", entered.visible),
        ("expiry (window boundary) -> first listing without the profile", exited.delays),
        ("one member listing (`GET .../members?limit=200`)", exited.listing_seconds),
    ):
        yield (
            f"| {label} | {pct(values, 0.5) * ms:.1f} ms | {pct(values, 0.99) * ms:.1f} ms |"
            f" {max(values) * ms:.1f} ms |"
        )
    yield ""
    first = sum(1 for reads in entered.reads if reads == 1)
    yield (
        f"Reads needed to see the entry: the first read after the write's answer, for {first}"
        f" of {profiles} profiles (max {max(entered.reads)}). Exits: {len(exited.delays)} of"
        f" {exits} measured, mean {statistics.mean(exited.delays) * ms:.0f} ms, bound"
        f" {sweep * ms} ms (the sweep interval) plus a sweep's run and the {poll * ms:.0f} ms"
        f" polling step; {exited.never_entered} never seen as members before their boundary."
    )
