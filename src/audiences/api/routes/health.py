"""Operator endpoints: ``/livez`` (the process answers) and ``/readyz`` (its database answers)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from audiences.api.problems import responses
from audiences.errors import ServiceUnavailable

router = APIRouter(tags=["operations"])


@router.get("/livez")
def livez() -> dict[str, str]:
    """The process is up. No dependency is checked, so a restart loop is never triggered by one."""
    return {"status": "ok"}


@router.get("/readyz", responses=responses(503))
def readyz(request: Request) -> JSONResponse:
    """The metadata database answers a query; 503 otherwise."""
    try:
        with request.app.state.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        raise ServiceUnavailable(
            "the metadata database does not answer", code="database_unavailable"
        ) from exc
    return JSONResponse({"status": "ok", "checks": {"database": "ok"}})
