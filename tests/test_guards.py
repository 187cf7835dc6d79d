"""Cheap guards for the shapes issue #12 took down, so they do not grow back: raw DBAPI access
outside the store, SQLAlchemy listeners registered when a module is imported, and a second
implementation of a route path."""

from __future__ import annotations

import ast
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Mount, Route

SRC = Path(__file__).resolve().parent.parent / "src" / "audiences"
RAW_DBAPI = ("dbapi_connection", "driver_connection", "raw_connection", "exec_driver_sql")


def _modules() -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text())) for path in sorted(SRC.rglob("*.py"))]


def test_no_dbapi_cursor_outside_the_store() -> None:
    """The metadata database is reached through SQLAlchemy sessions; only ``store/`` may go
    below them (the profile engines hold connections of their own engine, not of SQLAlchemy)."""
    found = [
        f"{path.relative_to(SRC)}:{node.lineno} {node.attr}"
        for path, tree in _modules()
        if "store" not in path.relative_to(SRC).parts
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr in RAW_DBAPI
    ]
    assert found == []


def test_no_sqlalchemy_listener_is_registered_at_import_time() -> None:
    """Listeners go on an engine, a session factory or a session the code was handed
    (``ReadCache.watch``, ``make_engine``), never on every session of the process."""
    found = []
    for path, tree in _modules():
        for node in tree.body:
            decorators = getattr(node, "decorator_list", [])
            if any("listens_for" in ast.unparse(d) for d in decorators):
                found.append(f"{path.relative_to(SRC)}:{node.lineno}")
            if isinstance(node, ast.Expr) and "event.listen" in ast.unparse(node):
                found.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert found == []


def test_one_implementation_per_route_path(app: FastAPI) -> None:
    """No route in front of a route: each method of each path is served by one handler, the
    documented one (the docs' own static files excepted: a mount, not an operation)."""
    routes = _routes(app.router.routes)
    served = Counter((method, route.path) for route in routes for method in route.methods or ())
    assert [key for key, count in served.items() if count > 1] == []
    undocumented = [
        route.path
        for route in routes
        if route.path not in ("/docs", "/openapi.json")
        and not (isinstance(route, APIRoute) and route.include_in_schema)
    ]
    assert undocumented == []


def _routes(entries: Sequence[BaseRoute]) -> list[Route]:
    """Every route of the app, through included routers (FastAPI includes them lazily)."""
    found: list[Route] = []
    for entry in entries:
        included = getattr(entry, "original_router", None)
        if included is not None:
            found += _routes(included.routes)
        elif isinstance(entry, Route):
            found.append(entry)
        else:
            assert isinstance(entry, Mount), entry  # the docs' static files
    return found
