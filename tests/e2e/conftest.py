"""A real ``audiences serve`` process on 127.0.0.1, for end-to-end tests over TCP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.databases import fresh_database

STARTUP_SECONDS = 60
DEMO_PROFILES = 3_000


@dataclass
class Server:
    """A running server: its base URL, data folder, the demo token and its output so far."""

    base_url: str
    data_dir: Path
    token: str
    process: subprocess.Popen[str]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed ``audiences`` command line."""
    return subprocess.run(
        [sys.executable, "-m", "audiences", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def start_server(
    data_dir: Path,
    database_url: str,
    *,
    demo_profiles: int = DEMO_PROFILES,
    settings: dict[str, str] | None = None,
) -> Server:
    """Start ``audiences serve --demo`` (``demo_profiles`` of them, with these ``AUDIENCES_*``
    ``settings`` too) and wait for ``/readyz``."""
    port = free_port()
    env = {**os.environ, "AUDIENCES_DATABASE_URL": database_url, **(settings or {})}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "audiences",
            "serve",
            "--demo",
            "--demo-profiles",
            str(demo_profiles),
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {process.stdout.read() if process.stdout else ''}")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                token = (data_dir / "demo-api-key.txt").read_text().strip()
                return Server(base_url, data_dir, token, process)
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("server did not become ready")


def stop_server(server: Server) -> str:
    """Stop the server gracefully and return everything it printed."""
    server.process.terminate()
    try:
        output, _ = server.process.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        output, _ = server.process.communicate()
    return output


@pytest.fixture(scope="module")
def e2e_database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The module's servers' own metadata database (SQLite in a folder, or a PostgreSQL
    database of its own), so no server finds a workspace another module's server seeded
    in a profile engine it does not have."""
    with fresh_database(tmp_path_factory.mktemp("e2e-db")) as url:
        yield url


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, e2e_database_url: str) -> Iterator[Server]:
    """One real server for the module."""
    running = start_server(tmp_path_factory.mktemp("e2e"), e2e_database_url)
    yield running
    stop_server(running)
