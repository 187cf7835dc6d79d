"""The server under test, started with a tree's ``src`` first on ``PYTHONPATH``.

    PYTHONPATH=<tree>/src python -m bench.http.server --data-dir DIR --port PORT \
        [--loop asyncio --http h11]

It is ``audiences serve`` without the CLI: ``create_app(Settings(...))``, start-up objects
frozen, ``uvicorn.run`` on 127.0.0.1, with the embedded job workers on (writes are applied)
and the rate limit raised out of the way. Only settings that every measured tree has are set.
It imports nothing from ``bench`` besides itself, so it runs against any tree.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import uvicorn

import audiences
from audiences.api.app import create_app
from audiences.config import Settings
from audiences.kit.heap import freeze_startup_objects
from audiences.kit.threads import shorten_thread_switches

RATE_LIMIT = "1000000000/minute"


def main(argv: list[str] | None = None) -> None:
    """Serve until terminated; first print which ``audiences`` and which loop/parser it runs."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", default="auto", help="uvicorn's loop: auto, asyncio, uvloop")
    parser.add_argument("--http", default="auto", help="uvicorn's parser: auto, h11, httptools")
    parser.add_argument("--worker-threads", type=int, default=2)
    args = parser.parse_args(argv)
    settings = Settings(
        data_dir=args.data_dir,
        rate_limit=RATE_LIMIT,
        worker_threads=args.worker_threads,
        log_level="warning",
    )
    app = create_app(settings)
    freeze_startup_objects()  # as `audiences serve` does
    shorten_thread_switches()
    installed = {
        name: importlib.util.find_spec(name) is not None for name in ("uvloop", "httptools")
    }
    print(
        f"audiences={audiences.__file__} loop={args.loop} http={args.http} {installed}", flush=True
    )
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        loop=args.loop,
        http=args.http,
    )


if __name__ == "__main__":
    main()
