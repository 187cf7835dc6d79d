"""Measuring over HTTP: the server process, sequential latencies with httpx, load with wrk."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

STARTUP_SECONDS = 120
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def server(data_dir: Path, log: Path) -> Iterator[str]:
    """Run ``bench.membership.server`` on a free port until the block ends; yield its URL."""
    port = free_port()
    command = [sys.executable, "-m", "bench.membership.server", "--data-dir", str(data_dir)]
    with log.open("w") as out:
        process = subprocess.Popen(
            [*command, "--port", str(port)], cwd=REPO, stdout=out, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited: {log.read_text()}")
            try:
                if httpx.get(f"{base}/livez", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def latencies(send: Callable[[int], httpx.Response], count: int) -> list[float]:
    """Seconds per call of ``send(n)`` for n in range(count); any answer but 200 stops the run."""
    out = []
    for n in range(count):
        started = time.perf_counter()
        response = send(n)
        out.append(time.perf_counter() - started)
        if response.status_code != 200:
            raise RuntimeError(f"{response.status_code}: {response.text[:500]}")
    return out


@dataclass(frozen=True)
class Load:
    """What one wrk run measured."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    timeouts: int


WRK_SCRIPT = """
local paths = {%s}
local n = #paths
local i = 0
wrk.headers["Authorization"] = "Bearer %s"
request = function()
  i = i %% n + 1
  return wrk.format("GET", paths[i])
end
"""


def wrk_available() -> bool:
    """Whether the wrk load generator is installed (Debian: ``apt-get install wrk``)."""
    return shutil.which("wrk") is not None


def wrk(
    base: str, token: str, paths: Sequence[str], folder: Path, *, seconds: float, connections: int
) -> Load:
    """Load the server with wrk (one thread) for ``seconds``, cycling through ``paths``."""
    script = folder / "paths.lua"
    listed = ", ".join(f'"{path}"' for path in paths)
    script.write_text(WRK_SCRIPT % (listed, token))
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(script),
        base,
    ]
    output = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 60, check=True
    ).stdout
    if "Non-2xx" in output or re.search(r"connect [1-9]|read [1-9]|write [1-9]", output):
        raise RuntimeError(f"wrk saw errors:\n{output}")
    timeouts = int(_field(r"timeout (\d+)", output)) if "Socket errors" in output else 0
    rps = float(_field(r"Requests/sec:\s+([\d.]+)", output))
    total = int(_field(r"(\d+) requests in", output))
    p50 = _ms(_field(r"^\s+50%\s+(\S+)", output))
    return Load(rps, p50, _ms(_field(r"^\s+99%\s+(\S+)", output)), total, timeouts)


def _field(pattern: str, text: str) -> str:
    found = re.search(pattern, text, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"no {pattern!r} in wrk output:\n{text}")
    return found.group(1)


def _ms(value: str) -> float:
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if found is None:
        raise RuntimeError(f"unexpected wrk latency {value!r}")
    number, unit = found.groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]
