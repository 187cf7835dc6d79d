"""What the benchmark measures on one server, every figure through the documented routes.

Seeding (attributes, streaming audiences, profiles through ``POST /v1/profiles/batch``), then
four measurements, each on audiences of its own so that rounds do not disturb one another:

- ``big_writes``: 10,000-id member writes sent back to back, timed until every one is applied
  and the members page shows them all (accepted, applied, visible);
- ``small_writes``: 5-id member writes from concurrent clients for a while, then until all of
  them are applied and visible;
- ``reads``: is-member or a profile's audiences from concurrent keep-alive connections;
- ``mixed``: 32 clients drawing operations by weight, with and without the writes.

Every measurement also reports the server process's CPU time per operation.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bench.http.client import Answer, Connection, HttpError, Timings, call
from bench.http.servers import Server

ATTRIBUTES = {
    "country": "string",
    "age": "integer",
    "plan": "string",
    "tags": "string_list",
    "lifetime_value": "float",
    "churned": "boolean",
}
COUNTRIES = ["US", "US", "US", "DE", "FR", "GB", "BR", "IN", "JP", "CA"]
PLANS = ["free"] * 6 + ["pro"] * 3 + ["team", "enterprise"]
TAGS = ["vip", "beta", "newsletter", "mobile", "web", "trial"]
STREAMING_RULES = {
    "s-us": "country = 'US'",
    "s-paying": "plan IN ('pro', 'team') AND NOT churned",
    "s-vip": "list_contains(tags, 'vip')",
    "s-thirties": "age >= 30 AND age < 40",
    "s-valuable": "lifetime_value > 250",
}
BATCH = 10_000  # profiles per seeding call, and ids per big write: the endpoints' maximum
SMALL = 5  # ids per small write, as clients of Batch-like APIs send them
VISIBLE_SECONDS = 600.0  # longest wait for writes to be applied before the run fails


def attributes(rng: random.Random) -> dict[str, Any]:
    """One synthetic profile's attributes."""
    return {
        "country": rng.choice(COUNTRIES),
        "age": rng.randint(16, 85),
        "plan": rng.choice(PLANS),
        "tags": [tag for tag in TAGS if rng.random() < 0.2],
        "lifetime_value": round(rng.lognormvariate(4.5, 1.3), 2),
        "churned": rng.random() < 0.2,
    }


def profile_id(n: int) -> str:
    return f"p-{n}"


def connect(server: Server) -> Connection:
    return Connection("127.0.0.1", server.port, server.token)


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1) of a non-empty list."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))]


# Seeding.


async def prepare(server: Server) -> None:
    """Declare the attributes and create the streaming audiences, before any profile."""
    conn = connect(server)
    for name, kind in ATTRIBUTES.items():
        await call(conn, "PUT", f"/v1/attributes/{name}", {"type": kind}, expect=201)
    for key, rule in STREAMING_RULES.items():
        policy = {"mode": "streaming"}
        body = {"key": key, "name": key, "kind": "dynamic", "rule": rule, "refresh_policy": policy}
        created = await call(conn, "POST", "/v1/audiences", body, expect=201)
        server.streaming.append(created.json()["id"])
    await jobs_idle(conn)
    await conn.close()


async def load_profiles(server: Server, start: int, stop: int, seed: int) -> None:
    """Upsert profiles ``p-<start>`` .. ``p-<stop - 1>``, 10,000 per call."""
    rng = random.Random(seed + start)
    conn = connect(server)
    for first in range(start, stop, BATCH):
        records = [
            {"id": profile_id(n), "attributes": attributes(rng)}
            for n in range(first, min(stop, first + BATCH))
        ]
        answer = await call(conn, "POST", "/v1/profiles/batch", {"profiles": records})
        if answer.json()["failed"]:
            raise HttpError(f"profiles refused: {answer.body[:500]!r}")
    server.profiles = max(server.profiles, stop)
    await conn.close()


async def jobs_idle(conn: Connection) -> None:
    """Wait until the workspace has no queued or running job."""
    deadline = time.monotonic() + VISIBLE_SECONDS
    while time.monotonic() < deadline:
        busy = 0
        for state in ("queued", "running"):
            busy += (await call(conn, "GET", f"/v1/jobs?state={state}&limit=1")).json()["total"]
        if busy == 0:
            return
        await asyncio.sleep(0.05)
    raise HttpError("jobs still running")


async def static_audience(conn: Connection, key: str) -> str:
    """Create an empty static audience; its id."""
    body = {"key": key, "name": key, "kind": "static"}
    return str((await call(conn, "POST", "/v1/audiences", body, expect=201)).json()["id"])


async def applied_and_visible(conn: Connection, audience: str, jobs: int, members: int) -> None:
    """Wait until ``jobs`` writes of the audience succeeded and its members page counts
    ``members``; any failed write stops the run."""
    deadline = time.monotonic() + VISIBLE_SECONDS
    base = f"/v1/jobs?subject_id={audience}&limit=1&state="
    while time.monotonic() < deadline:
        if (await call(conn, "GET", base + "failed")).json()["total"]:
            raise HttpError(f"a write to {audience} failed")
        if (await call(conn, "GET", base + "succeeded")).json()["total"] >= jobs:
            page = await call(conn, "GET", f"/v1/audiences/{audience}/members?limit=1")
            if page.json()["total"] == members:
                return
        await asyncio.sleep(0.01)
    raise HttpError(f"writes to {audience} not applied and visible after {VISIBLE_SECONDS} s")


# Member writes.


@dataclass
class Writes:
    """Member writes, end to end."""

    writes: int
    ids: int
    seconds: float  # from the first request to every write applied and visible
    sending: float  # from the first request to the last 202
    accept: list[float]  # seconds to each 202
    cpu: float  # server CPU seconds over ``seconds``
    refused: int = 0  # 429 write_backlog_full answers (each retried after Retry-After)


async def big_writes(server: Server, key: str, count: int) -> Writes:
    """``count`` writes of 10,000 ids (existing profiles) into a new static audience, one
    after the other, then until all are applied and visible."""
    conn = connect(server)
    audience = await static_audience(conn, key)
    path = f"/v1/audiences/{audience}/members"
    written: set[str] = set()
    accept = []
    cpu, started = server.cpu_seconds(), time.perf_counter()
    for w in range(count):
        ids = [profile_id((w * BATCH + j) % server.profiles) for j in range(BATCH)]
        sent = time.perf_counter()
        await call(conn, "POST", path, {"action": "add", "ids": ids}, expect=202)
        accept.append(time.perf_counter() - sent)
        written.update(ids)
    sending = time.perf_counter() - started
    await applied_and_visible(conn, audience, count, len(written))
    seconds = time.perf_counter() - started
    result = Writes(count, count * BATCH, seconds, sending, accept, server.cpu_seconds() - cpu)
    await conn.close()
    return result


async def small_writes(server: Server, key: str, clients: int, count: int) -> Writes:
    """``count`` 5-id writes from ``clients`` concurrent clients, each sending its next write
    once the last is accepted (a refused one again after ``Retry-After``); then until all are
    applied and visible. A count, not a duration: a server that accepts far faster than it
    applies would otherwise leave minutes of work behind."""
    conn = connect(server)
    audience = await static_audience(conn, key)
    path = f"/v1/audiences/{audience}/members"
    numbers = iter(range(count * SMALL))
    timings = Timings()

    async def client() -> None:
        own = connect(server)
        for first in numbers:
            ids = [profile_id(first % server.profiles)]
            ids += [profile_id(next(numbers) % server.profiles) for _ in range(SMALL - 1)]
            while True:
                sent = time.perf_counter()
                if await _write(own, path, ids, timings):
                    timings.add(sent)
                    break
        await own.close()

    cpu, started = server.cpu_seconds(), time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    sending = time.perf_counter() - started
    members = len({n % server.profiles for n in range(count * SMALL)})
    await applied_and_visible(conn, audience, count, members)
    total = time.perf_counter() - started
    await conn.close()
    cpu = server.cpu_seconds() - cpu
    return Writes(count, count * SMALL, total, sending, timings.seconds, cpu, timings.refused)


async def _write(conn: Connection, path: str, ids: list[str], timings: Timings) -> bool:
    """One add; on 429 wait as ``Retry-After`` asks (at most 1 s) and report not accepted."""
    answer = await conn.request("POST", path, {"action": "add", "ids": ids})
    if answer.status == 202:
        return True
    if answer.status == 429:
        timings.refused += 1
        await asyncio.sleep(min(1.0, float(answer.headers.get("retry-after", "1"))))
        return False
    raise HttpError(f"POST {path}: {answer.status}: {answer.body[:500]!r}")


# Reads and mixed load.

Send = Callable[[Connection, random.Random], Awaitable[Answer]]


WEIGHTS = {
    # the mixed load's operations and how often each is drawn (the writes last)
    "list audiences": 5,
    "one audience": 10,
    "members page (100)": 5,
    "is-member": 30,
    "profile's audiences": 15,
    "evaluate": 10,
    "list jobs": 5,
    "profile upsert (PUT)": 10,
    "member write (5 ids)": 10,
}


@dataclass
class Op:
    """One kind of request in a load: its name, how to send one, the statuses that succeed."""

    name: str
    send: Send
    expect: tuple[int, ...] = (200,)


@dataclass
class Load:
    """What a load measured: seconds per request by operation, refusals, server CPU."""

    seconds: float
    cpu: float
    timings: dict[str, Timings] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        return sum(len(t.seconds) for t in self.timings.values())


def operations(server: Server, write_audience: str | None) -> list[Op]:
    """The mixed load's operations; the writes only when ``write_audience`` is given."""
    n = server.profiles
    aud = server.streaming

    def get(path: Callable[[random.Random], str]) -> Send:
        return lambda conn, rng: conn.request("GET", path(rng))

    def someone(rng: random.Random) -> str:
        return profile_id(rng.randrange(n))

    def evaluate(conn: Connection, rng: random.Random) -> Awaitable[Answer]:
        body = {"profile_id": someone(rng), "explain": False}
        return conn.request("POST", "/v1/evaluate", body)

    def upsert(conn: Connection, rng: random.Random) -> Awaitable[Answer]:
        return conn.request("PUT", f"/v1/profiles/{someone(rng)}", {"attributes": attributes(rng)})

    def member_write(conn: Connection, rng: random.Random) -> Awaitable[Answer]:
        body = {"action": "add", "ids": [someone(rng) for _ in range(SMALL)]}
        return conn.request("POST", f"/v1/audiences/{write_audience}/members", body)

    ops = [
        Op("list audiences", get(lambda rng: "/v1/audiences?limit=50")),
        Op("one audience", get(lambda rng: f"/v1/audiences/{rng.choice(aud)}")),
        Op(
            "members page (100)",
            get(lambda rng: f"/v1/audiences/{rng.choice(aud)}/members?limit=100"),
        ),
        Op("is-member", get(lambda rng: f"/v1/audiences/{rng.choice(aud)}/members/{someone(rng)}")),
        Op("profile's audiences", get(lambda rng: f"/v1/profiles/{someone(rng)}/audiences")),
        Op("evaluate", evaluate),
        Op("list jobs", get(lambda rng: "/v1/jobs?limit=20")),
    ]
    if write_audience is not None:
        ops.append(Op("profile upsert (PUT)", upsert, expect=(200, 201)))
        ops.append(Op("member write (5 ids)", member_write, expect=(202,)))
    return ops


async def load(server: Server, ops: list[Op], clients: int, seconds: float, seed: int) -> Load:
    """``clients`` closed-loop clients, each sending its next request when the last answered,
    drawing the operation by weight, for ``seconds``."""
    timings = {op.name: Timings() for op in ops}
    weights = [WEIGHTS[op.name] for op in ops]

    async def client(number: int) -> None:
        rng = random.Random(seed * 1000 + number)
        conn = connect(server)
        while time.perf_counter() < stop:
            op = rng.choices(ops, weights)[0]
            sent = time.perf_counter()
            answer = await op.send(conn, rng)
            if answer.status in op.expect:
                timings[op.name].add(sent)
            elif answer.status == 429:
                timings[op.name].refused += 1
                await asyncio.sleep(min(1.0, float(answer.headers.get("retry-after", "1"))))
            else:
                raise HttpError(f"{op.name}: {answer.status}: {answer.body[:500]!r}")
        await conn.close()

    cpu, started = server.cpu_seconds(), time.perf_counter()
    stop = started + seconds
    await asyncio.gather(*(client(k) for k in range(clients)))
    return Load(time.perf_counter() - started, server.cpu_seconds() - cpu, timings)


async def mixed(
    server: Server, key: str | None, clients: int, seconds: float, seed: int
) -> tuple[Load, float]:
    """The mixed load, its member writes into a new static audience ``key`` (no writes at all
    without a key); and the seconds after the load until those writes were all applied."""
    conn = connect(server)
    audience = None if key is None else await static_audience(conn, key)
    result = await load(server, operations(server, audience), clients, seconds, seed)
    drain = 0.0
    if audience is not None:
        started = time.perf_counter()
        accepted = len(result.timings["member write (5 ids)"].seconds)
        await _all_succeeded(conn, audience, accepted)
        drain = time.perf_counter() - started
    await conn.close()
    return result, drain


async def _all_succeeded(conn: Connection, audience: str, jobs: int) -> None:
    deadline = time.monotonic() + VISIBLE_SECONDS
    base = f"/v1/jobs?subject_id={audience}&limit=1&state="
    while (await call(conn, "GET", base + "succeeded")).json()["total"] < jobs:
        if (await call(conn, "GET", base + "failed")).json()["total"]:
            raise HttpError(f"a write to {audience} failed")
        if time.monotonic() > deadline:
            raise HttpError(f"writes to {audience} not applied after {VISIBLE_SECONDS} s")
        await asyncio.sleep(0.01)


def read_op(server: Server, name: str) -> Op:
    """One of the mixed load's reads, alone (is-member, profile's audiences)."""
    return next(op for op in operations(server, None) if op.name == name)
