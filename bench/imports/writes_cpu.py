"""10,000-id JSON membership writes: process CPU per call (all threads) and calls/s, ours
against the bare orjson endpoint of ``run._json_writes``.

Unlike ``run._json_writes``, the calls of ours are timed until the write intake has committed
them all (its flusher's work is counted), and CPU time depends less than calls/s on the other
processes sharing the machine::

    PYTHONPATH=src .venv/bin/python -m bench.imports.writes_cpu
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import httpx
import orjson
from fastapi import FastAPI, Request, Response
from tests.factories import mint_key

from audiences.api.app import create_app
from audiences.schemas.api_keys import Role
from bench.imports.run import _settings


def _bare() -> FastAPI:
    bare = FastAPI()

    @bare.post("/v1/audiences/{audience_id}/members", status_code=202)
    async def parse_only(audience_id: str, request: Request) -> Response:
        data = orjson.loads(await request.body())
        return Response(orjson.dumps({"ids": len(data["ids"])}), status_code=202)

    return bare


async def measure(calls: int = 300) -> dict[str, tuple[float, float]]:
    """Per target: (CPU ms per call, calls per second)."""
    body = orjson.dumps({"action": "add", "ids": [f"crm-{i:08d}" for i in range(10_000)]})
    out: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        settings = _settings(Path(folder)).model_copy(update={"rate_limit": "1000000/minute"})
        app = create_app(settings)
        intake = getattr(app.state.runtime, "intake", None)  # None before the intake existed
        token, _ = mint_key(app, "w", Role.WRITE)
        auth = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        for name, target in (("bare", _bare()), ("ours", app)):
            transport = httpx.ASGITransport(app=target)
            async with httpx.AsyncClient(transport=transport, base_url="http://b") as client:
                static = {"key": "l", "name": "l", "kind": "static"}
                created = await client.post("/v1/audiences", headers=auth, json=static)
                audience_id = created.json().get("id", "x") if name == "ours" else "x"
                url = f"/v1/audiences/{audience_id}/members"
                for _ in range(5):
                    await client.post(url, content=body, headers=auth)
                if intake is not None:
                    intake.barrier()
                cpu, wall = time.process_time(), time.perf_counter()
                for _ in range(calls):
                    response = await client.post(url, content=body, headers=auth)
                    assert response.status_code == 202, response.text
                if name == "ours" and intake is not None:
                    intake.barrier()
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                out[name] = (cpu / calls * 1e3, calls / wall)
        if intake is not None:
            intake.close()
        app.state.engine.dispose()
        app.state.runtime.profiles.close()
    return out


def main() -> None:
    out = asyncio.run(measure())
    (bare_cpu, bare_rate), (ours_cpu, ours_rate) = out["bare"], out["ours"]
    print(
        f"CPU ms/call: bare {bare_cpu:.2f}, ours {ours_cpu:.2f} ({bare_cpu / ours_cpu:.3f}x); "
        f"calls/s: bare {bare_rate:.0f}, ours {ours_rate:.0f} ({ours_rate / bare_rate:.3f}x)"
    )


if __name__ == "__main__":
    main()
