"""Operator endpoints: ``/livez``, ``/readyz`` (its databases answer) and ``/metrics``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import text

from audiences.api.metrics import CONTENT_TYPE
from audiences.api.problems import responses
from audiences.api.queries import KnownQuery
from audiences.engines.base import Reachable
from audiences.errors import ServiceUnavailable

router = APIRouter(tags=["operations"], dependencies=[KnownQuery])


@router.get("/livez")
def livez() -> dict[str, str]:
    """The process is up. No dependency is checked, so a restart loop is never triggered by one."""
    return {"status": "ok"}


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format."}},
)
def metrics(request: Request) -> PlainTextResponse:
    """Prometheus metrics: requests by route and status, latencies, the job queue by state.

    Unauthenticated, like ``/livez``: expose it only where your scraper can reach it.
    """
    exposition: bytes = request.app.state.metrics.exposition()
    return PlainTextResponse(exposition, media_type=CONTENT_TYPE)


@router.get("/readyz", responses=responses(503))
def readyz(request: Request) -> JSONResponse:
    """The metadata database answers a query, and so does the profile engine when it is a
    server (PostgreSQL); 503 otherwise."""
    try:
        with request.app.state.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        raise ServiceUnavailable(
            "the metadata database does not answer", code="database_unavailable"
        ) from exc
    checks = {"database": "ok"}
    profiles = request.app.state.runtime.profiles
    if isinstance(profiles, Reachable):
        profiles.ping()  # engine_unavailable (503) when it does not answer
        checks["profile_engine"] = "ok"
    return JSONResponse({"status": "ok", "checks": checks})
