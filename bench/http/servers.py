"""The servers under test: one process per source tree, each on a fresh data folder.

A tree is given as ``PATH[@LOOP/HTTP]``: ``PATH`` is its ``src`` folder (put first on the
server's ``PYTHONPATH``, so the server imports that tree's ``audiences``), ``LOOP/HTTP`` are
uvicorn's event loop and HTTP parser (default ``auto/auto``: uvloop and httptools when
installed, as ``audiences serve`` runs today; ``asyncio/h11`` is the server as it ran before
uvicorn[standard]). The API key is minted with the tree's own ``audiences keys create``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 120
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
AUDIENCES = [sys.executable, "-m", "audiences"]  # the CLI of the tree on PYTHONPATH


@dataclass(frozen=True)
class Tree:
    """A source tree to serve, and how uvicorn serves it."""

    src: Path
    loop: str = "auto"
    http: str = "auto"

    @classmethod
    def parse(cls, text: str) -> Tree:
        """``/path/to/src`` or ``/path/to/src@asyncio/h11``."""
        path, _, runtime = text.partition("@")
        src = Path(path).resolve()
        if not (src / "audiences" / "__init__.py").exists():
            raise SystemExit(f"{src} holds no audiences package (give the tree's src folder)")
        if not runtime:
            return cls(src)
        loop, _, http = runtime.partition("/")
        return cls(src, loop or "auto", http or "auto")

    @property
    def commit(self) -> str:
        """The tree's commit (short), ``+`` when its ``src`` has uncommitted changes."""
        git = ["git", "-C", str(self.src)]
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        )
        if head.returncode != 0:
            return "?"
        dirty = subprocess.run([*git, "status", "--porcelain", "--", "."], capture_output=True)
        return head.stdout.strip() + ("+" if dirty.stdout.strip() else "")

    def environment(self) -> dict[str, str]:
        """The environment of this tree's processes: its ``src`` first, no bytecode written
        into trees that are not ours, no ``AUDIENCES_*`` from the caller's shell."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIENCES_")}
        env["PYTHONPATH"] = f"{self.src}{os.pathsep}{REPO}"
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        return env


@dataclass
class Server:
    """A running server of one tree: its URL parts, key, process and seeded audiences."""

    tree: Tree
    label: str
    folder: Path
    port: int
    token: str
    process: subprocess.Popen[bytes]
    streaming: list[str] = field(default_factory=list)  # ids of the dynamic streaming audiences
    profiles: int = 0

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far, all of its threads."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(tree: Tree, label: str, folder: Path, settings: dict[str, str] | None = None) -> Server:
    """Mint a key with the tree's CLI on the data folder ``folder/data`` (fresh, or one put
    there before, e.g. a loaded workspace), then start its server; ``settings`` are
    ``AUDIENCES_*`` variables of its environment (a short sweep interval)."""
    data_dir = folder / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    env = tree.environment() | (settings or {})
    minted = subprocess.run(
        [
            *AUDIENCES,
            "keys",
            "create",
            "--workspace",
            "bench",
            "--json",
            "--data-dir",
            str(data_dir),
        ],
        cwd=folder,
        env=env,
        capture_output=True,
        check=True,
    )
    token = orjson.loads(minted.stdout.splitlines()[0])["token"]
    port = free_port()
    log = folder / "server.log"
    command = [sys.executable, "-m", "bench.http.server", "--data-dir", str(data_dir)]
    command += ["--port", str(port), "--loop", tree.loop, "--http", tree.http]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    server = Server(tree, label, folder, port, token, process)
    _wait_until_up(server, log)
    first = log.read_text().splitlines()[0]
    if f"audiences={tree.src}/" not in first:
        server.stop()
        raise RuntimeError(f"the server of {tree.src} imported another tree: {first}")
    return server


def _wait_until_up(server: Server, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=1) as sock:
                sock.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"server did not start: {log.read_text()}")
        time.sleep(0.2)
