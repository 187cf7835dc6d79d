"""The API server the benchmark measures over HTTP.

    python -m bench.membership.server --data-dir DIR --port PORT

One uvicorn worker on 127.0.0.1, the app from ``create_app`` (as ``audiences serve`` builds it)
with the rate limit raised out of the way, no embedded job workers and no access log.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn

from audiences.api.app import create_app
from audiences.config import Settings
from audiences.kit.heap import freeze_startup_objects
from audiences.kit.threads import shorten_thread_switches

RATE_LIMIT = "1000000000/minute"


def settings(data_dir: Path) -> Settings:
    """The settings of both the in-process and the HTTP measurements."""
    return Settings(data_dir=data_dir, rate_limit=RATE_LIMIT, worker_threads=0, log_level="warning")


def main(argv: list[str] | None = None) -> None:
    """Serve until terminated."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    app = create_app(settings(args.data_dir))
    freeze_startup_objects()  # as `audiences serve` does
    shorten_thread_switches()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
