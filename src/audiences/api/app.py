"""The FastAPI application: built from settings, with every convention wired in one place."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio.to_thread
import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from audiences import __version__
from audiences.api import problems
from audiences.api.metrics import Metrics, MetricsMiddleware
from audiences.api.middleware import (
    AuthenticationMiddleware,
    BodyLimitMiddleware,
    BodyTimeoutMiddleware,
    RequestContextMiddleware,
)
from audiences.api.paths import EncodedSlashMiddleware
from audiences.api.ratelimit import RateLimiter
from audiences.api.routes import (
    api_keys,
    attributes,
    audiences,
    destinations,
    event_properties,
    events,
    groups,
    health,
    imports,
    jobs,
    members,
    profiles,
    workspaces,
)
from audiences.config import Settings
from audiences.jobs.worker import embedded
from audiences.services.callers import Caller
from audiences.services.idempotency import Replayed
from audiences.services.runtime import open_runtime
from audiences.store.db import make_engine, make_session_factory
from audiences.store.migrate import migrate
from audiences.store.read_cache import ReadCache

BATCH_PATHS = re.compile(r"^/v1/(profiles/batch|events|audiences/[^/]+/members)/?$")
"""Calls that carry up to 10,000 records or ids: their bodies fall under the batch limit."""
DOCS_STATIC = Path(fastapi_offline.__file__).parent / "static"
DESCRIPTION = """An open, self-hostable audience engine.

Authenticate with an API key: `Authorization: Bearer aud_…`. Errors are RFC 9457 problem
details with a stable `code`; every response carries `X-Request-ID`. Lists share one set of
conventions (cursor or offset paging, filters, `q`, `sort`, `fields`, `include`)."""


def create_app(settings: Settings | None = None) -> FastAPI:
    """An app for ``settings``: migrates the metadata database, then serves the API."""
    settings = settings or Settings()
    engine = make_engine(settings.metadata_url)
    migrate(engine)
    app = FastAPI(
        title="Audiences",
        version=__version__,
        description=DESCRIPTION,
        docs_url=None,
        redoc_url=None,
        lifespan=_lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = make_session_factory(engine)
    app.state.read_engine = (
        engine
        if engine.dialect.name != "sqlite"
        else make_engine(settings.metadata_url, read_only=True)
    )
    app.state.read_session_factory = make_session_factory(app.state.read_engine)
    app.state.rate_limiter = RateLimiter(settings.rate_limit, settings.rate_limit_storage)
    reads: ReadCache[Caller] = ReadCache(settings.read_cache_seconds)
    reads.watch(app.state.session_factory)
    app.state.runtime = open_runtime(settings, engine, app.state.session_factory, reads=reads)
    problems.install(app)
    app.add_exception_handler(Replayed, _replay)
    # Outermost last: request ids, metrics, authentication (before any body is read), the body
    # limits.
    app.add_middleware(EncodedSlashMiddleware)  # innermost: only routing sees its paths
    app.add_middleware(BodyTimeoutMiddleware, seconds=settings.body_timeout_seconds)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        path_limits=[
            (imports.UPLOAD_PATHS, settings.max_upload_bytes),
            (BATCH_PATHS, settings.max_batch_body_bytes),
        ],
    )
    app.add_middleware(AuthenticationMiddleware)
    app.state.metrics = Metrics(app.state.read_session_factory)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.add_middleware(RequestContextMiddleware)
    for module in (
        health,
        audiences,
        members,
        destinations,
        imports,
        groups,
        attributes,
        event_properties,
        events,
        profiles,
        api_keys,
        jobs,
        workspaces,
    ):
        app.include_router(module.router)
    _mount_docs(app)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Run the embedded job workers (``AUDIENCES_WORKER_THREADS``) while the server runs."""
    pool = embedded(app.state.settings, app.state.session_factory, app.state.runtime)
    try:
        yield
    finally:
        if pool is not None:
            await anyio.to_thread.run_sync(pool.stop)
        app.state.runtime.profiles.close()


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, with every error as a problem and optional parameters not nullable.

    A query parameter or header cannot be JSON null: leaving it out is how a client says
    "none". FastAPI renders ``str | None = None`` as ``anyOf: [string, null]``, which invites
    clients (and fuzzers) to send the literal text ``null``.
    """
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                for parameter in operation.get("parameters", []):
                    parameter["schema"] = _without_null(parameter.get("schema", {}))
                problems.document_errors(operation)
        schema["components"]["schemas"].pop("HTTPValidationError", None)
        schema["components"]["schemas"].pop("ValidationError", None)
        app.openapi_schema = schema
    return app.openapi_schema


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    options = schema.get("anyOf")
    if not options:
        return schema
    kept = [option for option in options if option.get("type") != "null"]
    if len(kept) != 1:
        return schema
    rest = {key: value for key, value in schema.items() if key != "anyOf"}
    return {**kept[0], **rest}


async def _replay(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Replayed)
    stored = exc.response
    headers = {**stored.headers, "Idempotent-Replayed": "true"}
    return JSONResponse(stored.body, status_code=stored.status, headers=headers)


def _mount_docs(app: FastAPI) -> None:
    """Swagger UI from files shipped in a package, so ``/docs`` works with no network."""
    app.mount("/static/docs", StaticFiles(directory=DOCS_STATIC), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="Audiences API",
            swagger_js_url="/static/docs/swagger-ui-bundle.js",
            swagger_css_url="/static/docs/swagger-ui.css",
            swagger_favicon_url="/static/docs/favicon.png",
        )
