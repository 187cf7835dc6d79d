"""10,000-id JSON membership writes against a bare endpoint that parses the same body with
orjson: calls per second and process CPU per call (all threads), in interleaved rounds.

Both run in this process over httpx's ASGI transport. Each round makes ``--calls`` calls to
the bare endpoint, then as many to ours, timed until the write intake has committed them all
(its flusher's work is counted). A ratio is ours / bare within a round; the median over the
rounds is reported, since the other processes sharing the machine shift both alike within a
round but not across rounds::

    PYTHONPATH=src .venv/bin/python -m bench.imports.writes_cpu [--rounds 5] [--calls 200]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
from tests.factories import mint_key

from audiences.api.app import create_app
from audiences.kit.heap import freeze_startup_objects
from audiences.schemas.api_keys import Role
from bench.imports.run import _settings
from bench.imports.writes_http import bare_app


@dataclass(frozen=True)
class Round:
    """One round: per target, CPU ms per call and calls per second."""

    bare_cpu: float
    bare_rate: float
    ours_cpu: float
    ours_rate: float

    @property
    def rate_ratio(self) -> float:
        return self.ours_rate / self.bare_rate

    @property
    def cpu_ratio(self) -> float:
        return self.bare_cpu / self.ours_cpu


async def measure(rounds: int = 5, calls: int = 200) -> list[Round]:
    """``rounds`` interleaved rounds of ``calls`` calls to each target."""
    body = orjson.dumps({"action": "add", "ids": [f"crm-{i:08d}" for i in range(10_000)]})
    measured: list[Round] = []
    with tempfile.TemporaryDirectory(prefix="bench-writes-") as folder:
        settings = _settings(Path(folder)).model_copy(update={"rate_limit": "1000000/minute"})
        app = create_app(settings)
        freeze_startup_objects()  # as `audiences serve` does
        intake = app.state.runtime.intake
        token, _ = mint_key(app, "w", Role.WRITE)
        auth = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        ours = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b")
        bare = httpx.AsyncClient(transport=httpx.ASGITransport(app=bare_app()), base_url="http://b")
        async with ours, bare:
            static = {"key": "l", "name": "l", "kind": "static"}
            created = await ours.post("/v1/audiences", headers=auth, json=static)
            url = f"/v1/audiences/{created.json()['id']}/members"

            async def timed(client: httpx.AsyncClient) -> tuple[float, float]:
                cpu, wall = time.process_time(), time.perf_counter()
                for _ in range(calls):
                    response = await client.post(url, content=body, headers=auth)
                    assert response.status_code == 202, response.text
                if client is ours and intake is not None:
                    intake.barrier()
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                return cpu / calls * 1e3, calls / wall

            for client in (bare, ours, bare, ours):  # warm-up
                for _ in range(5):
                    await client.post(url, content=body, headers=auth)
            for _ in range(rounds):
                bare_cpu, bare_rate = await timed(bare)
                ours_cpu, ours_rate = await timed(ours)
                measured.append(Round(bare_cpu, bare_rate, ours_cpu, ours_rate))
        if intake is not None:
            intake.close()
        app.state.engine.dispose()
        app.state.runtime.profiles.close()
    return measured


def summary(measured: list[Round]) -> str:
    """Each round on a line, then the medians."""
    lines = [
        f"round {n}: calls/s bare {r.bare_rate:.0f}, ours {r.ours_rate:.0f} ({r.rate_ratio:.3f}x);"
        f" CPU ms/call bare {r.bare_cpu:.2f}, ours {r.ours_cpu:.2f} ({r.cpu_ratio:.3f}x)"
        for n, r in enumerate(measured, 1)
    ]
    rate = statistics.median(r.rate_ratio for r in measured)
    cpu = statistics.median(r.cpu_ratio for r in measured)
    lines.append(f"median ours / bare: calls/s {rate:.3f}x, CPU per call {cpu:.3f}x")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=200, help="calls per target per round")
    args = parser.parse_args()
    print(summary(asyncio.run(measure(args.rounds, args.calls))))


if __name__ == "__main__":
    main()
