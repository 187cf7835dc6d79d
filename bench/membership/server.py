"""The API server the benchmark measures over HTTP: our app plus two bare ping routes.

    python -m bench.membership.server --data-dir DIR --port PORT

One uvicorn worker on 127.0.0.1, the app from ``create_app`` (as ``audiences serve`` builds it)
with the rate limit raised out of the way, no embedded job workers and no access log. ``/ping``
(``async def``) and ``/ping-sync`` (``def``, on the thread pool like our handlers) are the
references: the same app instance, middleware and server settings, no database.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from audiences.api.app import create_app
from audiences.config import Settings
from audiences.kit.heap import freeze_startup_objects

RATE_LIMIT = "1000000000/minute"


def settings(data_dir: Path) -> Settings:
    """The settings of both the in-process and the HTTP measurements."""
    return Settings(data_dir=data_dir, rate_limit=RATE_LIMIT, worker_threads=0, log_level="warning")


def app_with_pings(data_dir: Path) -> FastAPI:
    """Our app, with the two reference routes added to the same instance."""
    app = create_app(settings(data_dir))

    @app.get("/ping", include_in_schema=False)
    async def ping() -> dict[str, Any]:
        return {"ok": True}

    @app.get("/ping-sync", include_in_schema=False)
    def ping_sync() -> dict[str, Any]:
        return {"ok": True}

    return app


def main(argv: list[str] | None = None) -> None:
    """Serve until terminated."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    app = app_with_pings(args.data_dir)
    freeze_startup_objects()  # as `audiences serve` does
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
