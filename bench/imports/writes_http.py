"""10,000-id JSON membership writes over real HTTP: our server against a bare one, with wrk.

Two uvicorn processes on loopback, one worker each: ``bench.membership.server`` (our app as
``audiences serve`` builds it, SQLite, so writes go through the write intake) and a bare
FastAPI app whose one route parses the same body with orjson and answers 202. wrk (one thread,
``--connections`` connections, another process) posts the same 130 KB body in rounds that
alternate between the two; a ratio is ours / bare within a round, and the median over the
rounds is reported. Unlike :mod:`bench.imports.writes_cpu`, the client's work is not in the
server's process, so the ratio is the servers' own::

    PYTHONPATH=src .venv/bin/python -m bench.imports.writes_http [--rounds 5] [--seconds 3]

Needs wrk (Debian: ``apt-get install wrk``).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import orjson
import uvicorn
from fastapi import FastAPI, Request, Response

from bench.membership.over_http import REPO, free_port, server

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %s"
local file = io.open("%s", "rb")
wrk.body = file:read("*a")
file:close()
"""


def bare_app() -> FastAPI:
    """The reference: parse the body with orjson, answer 202."""
    bare = FastAPI()

    @bare.post("/v1/audiences/{audience_id}/members", status_code=202)
    async def parse_only(audience_id: str, request: Request) -> Response:
        data = orjson.loads(await request.body())
        return Response(orjson.dumps({"ids": len(data["ids"])}), status_code=202)

    @bare.get("/livez")
    async def live() -> dict[str, bool]:
        return {"ok": True}

    return bare


@contextmanager
def bare_server(log: Path) -> Iterator[str]:
    """Run the bare app in a process of its own until the block ends; yield its URL."""
    port = free_port()
    command = [sys.executable, "-m", "bench.imports.writes_http", "--serve-bare", str(port)]
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{base}/livez", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)


def _token(data_dir: Path) -> str:
    """A write key, minted before the server starts (it reads the same SQLite file)."""
    from tests.factories import mint_key

    from audiences.api.app import create_app
    from audiences.schemas.api_keys import Role
    from bench.membership.server import settings

    app = create_app(settings(data_dir))
    token, _ = mint_key(app, "bench-writes", Role.WRITE)
    if app.state.runtime.intake is not None:
        app.state.runtime.intake.close()
    app.state.runtime.profiles.close()
    app.state.engine.dispose()
    return token


def _rate(
    base: str, path: str, token: str, body: Path, folder: Path, seconds: int, n: int
) -> float:
    script = folder / "post.lua"
    script.write_text(WRK_SCRIPT % (token, body))
    output = subprocess.run(
        ["wrk", "-t1", f"-c{n}", f"-d{seconds}s", "-s", str(script), base + path],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    if "Non-2xx" in output or "Socket errors" in output:
        raise RuntimeError(f"wrk saw errors:\n{output}")
    line = next(x for x in output.splitlines() if x.startswith("Requests/sec:"))
    return float(line.split()[1])


def measure(rounds: int, seconds: int, connections: int) -> list[tuple[float, float]]:
    """Per round: (bare requests/s, ours requests/s)."""
    with tempfile.TemporaryDirectory(prefix="bench-writes-http-") as tmp:
        folder = Path(tmp)
        body = folder / "body.json"
        ids = [f"crm-{i:08d}" for i in range(10_000)]
        body.write_bytes(orjson.dumps({"action": "add", "ids": ids}))
        token = _token(folder / "data")
        with (
            server(folder / "data", folder / "ours.log") as ours,
            bare_server(folder / "bare.log") as bare,
        ):
            auth = {"Authorization": f"Bearer {token}"}
            static = {"key": "l", "name": "l", "kind": "static"}
            created = httpx.post(f"{ours}/v1/audiences", json=static, headers=auth, timeout=30)
            path = f"/v1/audiences/{created.json()['id']}/members"
            json_auth = {**auth, "Content-Type": "application/json"}
            first = httpx.post(ours + path, content=body.read_bytes(), headers=json_auth)
            assert first.status_code == 202, first.text  # the intake takes the next ones
            _rate(bare, path, token, body, folder, 1, connections)  # warm-up
            _rate(ours, path, token, body, folder, 1, connections)
            measured = []
            for _ in range(rounds):
                measured.append(
                    (
                        _rate(bare, path, token, body, folder, seconds, connections),
                        _rate(ours, path, token, body, folder, seconds, connections),
                    )
                )
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=3, help="per target per round")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--serve-bare", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        uvicorn.run(bare_app(), host="127.0.0.1", port=args.serve_bare, log_level="warning")
        return
    measured = measure(args.rounds, args.seconds, args.connections)
    for n, (bare, ours) in enumerate(measured, 1):
        print(f"round {n}: requests/s bare {bare:.0f}, ours {ours:.0f} ({ours / bare:.3f}x)")
    ratio = statistics.median(ours / bare for bare, ours in measured)
    print(f"median ours / bare: {ratio:.3f}x ({args.connections} connections)")


if __name__ == "__main__":
    main()
