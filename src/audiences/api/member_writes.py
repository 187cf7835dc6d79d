"""JSON membership writes: the body's fast checks, and a lean path in front of the route.

``POST /v1/audiences/{id}/members`` carries up to 10,000 ids and is called in bulk, so the
per-request work around it (FastAPI resolving seven dependencies, three of them generators run
in worker threads, a sha256 of the body for an Idempotency-Key that is seldom sent, the ORM)
cost several times what parsing the body does. :class:`LeanMemberWrites` sits in front of the
documented route with the same path and accepts a plain write itself: it checks the body on
the event loop (a compact one without parsing it, :func:`compact_write`), authenticates with
:func:`get_caller` (cached, rate limit counted as the route counts it), and either hands the
write to the write intake (SQLite, an audience that took a write here before:
``services/intake.py`` logs it and answers at once) or makes one thread-pool hop to
:func:`audiences.services.static_members.accept_ids`, whose transaction it commits. Anything
else (an Idempotency-Key, another content type, an id the route would refuse, a body that needs
full validation or breaks a limit) goes to the route unchanged, the body handed on as read, so
every error and every answer is the route's. Errors raised on the lean path (401, 403, 404,
409, 429) are the ones the route raises at the same point, rendered by the same handlers.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from fastapi import APIRouter, FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from audiences.api.content import JSON, media_type
from audiences.api.deps import ID_PATTERN, bearer, get_caller
from audiences.config import Settings
from audiences.errors import BadRequest
from audiences.schemas.api_keys import Role
from audiences.schemas.jobs import Job
from audiences.services import static_members
from audiences.services.callers import Caller
from audiences.services.import_formats import CONTROL
from audiences.services.intake import Intake, IntakeClosed

MAX_ID_LENGTH = 512
AUDIENCE_ID = re.compile(ID_PATTERN)
QUOTE = ord('"')
QUOTE_BLOCK = 256
"""Bytes per block in :func:`_quoted_lengths_ok`'s quick test: at most half of MAX_ID_LENGTH."""


def parse(raw: bytes) -> Any:
    """The body as JSON; 400 ``malformed_json`` when it is not."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("the body is not valid JSON", code="malformed_json") from None


COMPACT_PREFIXES = {f'{{"action":"{a}","ids":["'.encode(): a for a in static_members.ACTIONS}
COMPACT_SUFFIX = b'"]}'
COMMA = ord(",")
FIRST_PRINTABLE = 0x20


def compact_write(raw: bytes, max_ids: int) -> tuple[str, int] | None:
    """``(action, number of ids)`` of a plain write in the compact form (``{"action":"add",
    "ids":["a","b"]}``, exactly so: what JSON libraries write by default), checked exactly
    without building the ids; None for any other body (:func:`plain_write` then judges it).

    Between ``["`` and ``"]}`` such a body is ids joined by ``","``. With no backslash and no
    control character there, every ``"`` is part of a separator, so each even-numbered quote
    must be followed by ``,"``; the ids are the spans between separators, each 1-512 bytes
    (so at most as many characters). Valid UTF-8 makes the body valid JSON.
    """
    action = COMPACT_PREFIXES.get(raw[: raw.find(b"[") + 2])
    if action is None or not raw.endswith(COMPACT_SUFFIX):
        return None
    start, end = raw.find(b"[") + 2, len(raw) - len(COMPACT_SUFFIX)
    if end <= start or b"\\" in raw:
        return None
    inner = np.frombuffer(raw, np.uint8, count=end - start, offset=start)
    if bool((inner < FIRST_PRINTABLE).any()):
        return None
    quotes = np.flatnonzero(inner == QUOTE)
    if len(quotes) % 2:
        return None
    closing, opening = quotes[0::2], quotes[1::2]
    if not (np.array_equal(opening, closing + 2) and bool((inner[closing + 1] == COMMA).all())):
        return None
    lengths = np.append(closing, end - start) - np.append(-1, opening) - 1
    if int(lengths.min()) < 1 or int(lengths.max()) > MAX_ID_LENGTH or len(lengths) > max_ids:
        return None
    try:
        raw.decode()
    except UnicodeDecodeError:
        return None
    return action, len(lengths)


def plain_write(data: Any, raw: bytes, max_ids: int) -> tuple[str, list[str]] | None:
    """``(action, ids)`` of a body that needs no further validation: exactly ``action`` (a known
    one) and ``ids`` (at most ``max_ids`` strings of 1-512 characters, no control characters);
    None for anything else, which the model then validates (and refuses) in full."""
    if not isinstance(data, dict) or data.keys() != {"action", "ids"}:
        return None
    action, ids = data["action"], data["ids"]
    if action not in static_members.ACTIONS or not isinstance(ids, list) or len(ids) > max_ids:
        return None
    return (action, ids) if plain_ids(ids, raw) else None


def plain_ids(ids: list[str], raw: bytes) -> bool:
    """Every id a string of 1-512 characters without control characters, in C-speed passes
    (``join`` refuses anything but strings); ``raw`` is the body they were parsed from.

    Raw control characters are not valid JSON, so without a backslash in ``raw`` no string
    holds one, every ``"`` in it delimits a string, and the lengths come from the quotes'
    positions: no string of the document over 512 bytes means no id over 512 characters.
    """
    if not ids:
        return True
    try:
        joined = "".join(ids)
    except TypeError:
        return False
    if b"\\" not in raw and _quoted_lengths_ok(np.frombuffer(raw, np.uint8) == QUOTE):
        return True
    lengths_ok = min(map(len, ids)) > 0 and max(map(len, ids)) <= MAX_ID_LENGTH
    return lengths_ok and not CONTROL.search(joined)


def _quoted_lengths_ok(quotes: npt.NDArray[np.bool_]) -> bool:
    """Every string of an escape-free JSON document 1-512 bytes long (so as many characters at
    most); ``quotes`` marks where its ``"`` are. False only means "look at the ids themselves".

    In such a document a string is the bytes between two neighbouring quotes. Two adjacent
    quotes are an empty string. If every block of 256 bytes holds a quote, neighbouring quotes
    are at most 511 bytes apart, so no string is longer: the usual case, settled without
    finding the quotes' positions (which costs three times as much).
    """
    if (quotes[:-1] & quotes[1:]).any():
        return False
    blocks = len(quotes) // QUOTE_BLOCK
    if quotes[: blocks * QUOTE_BLOCK].reshape(blocks, QUOTE_BLOCK).any(axis=1).all():
        return True
    at = np.flatnonzero(quotes)
    if len(at) % 2:
        return False
    spans = at[1::2] - at[0::2]  # a string's length plus one
    return int(spans.max()) <= MAX_ID_LENGTH + 1


class LeanMemberWrites:
    """The ASGI app in front of the member-write route: a plain write accepted here, anything
    else handed to ``full``."""

    def __init__(self, full: APIRoute, job_route: APIRoute) -> None:
        self.full = full
        self.job_route = job_route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = self.full  # metrics and logs see the documented route
        request = Request(scope, receive)
        audience_id = request.path_params.get("audience_id", "")
        if (
            request.headers.get("idempotency-key") is not None
            or media_type(request) != JSON
            or not AUDIENCE_ID.match(audience_id)
        ):
            await self.full.handle(scope, receive, send)
            return
        raw = await request.body()
        settings = request.app.state.settings
        write = _checked(raw, settings.max_member_ids_per_call)
        if write is None:
            await self.full.handle(scope, _replaying(raw, receive), send)
            return
        caller = await get_caller(request, await bearer(request))
        caller.require(Role.WRITE)
        action, ids = write
        intake: Intake | None = request.app.state.runtime.intake
        job = None
        if intake is not None and intake.takes(caller.workspace_id, audience_id):
            try:
                job = intake.accept(
                    caller=caller,
                    audience_id=audience_id,
                    action=action,
                    body=raw,
                    max_attempts=settings.job_max_attempts,
                )
            except IntakeClosed:
                job = None
        if job is None:
            job = await run_in_threadpool(
                _accept,
                request.app.state.session_factory,
                caller,
                audience_id,
                action,
                ids,
                raw,
                settings,
                intake,
            )
        response = Response(
            job.model_dump_json(),
            status_code=202,
            media_type=JSON,
            headers={"Location": self._location(request, job)},
        )
        await response(scope, receive, send)

    def _location(self, request: Request, job: Job) -> str:
        """``request.url_for("get_job", …).path``, without trying every route of the app."""
        scope = request.scope
        root = str(scope.get("app_root_path", scope.get("root_path", "")))
        return root.rstrip("/") + str(self.job_route.url_path_for("get_job", job_id=job.id))


def _checked(raw: bytes, max_ids: int) -> tuple[str, list[str] | None] | None:
    """``(action, ids)`` of a plain write, None for any other body. A compact body is checked
    without being parsed (``ids`` None: the write intake never needs them)."""
    compact = compact_write(raw, max_ids)
    if compact is not None:
        return compact[0], None
    try:
        return plain_write(orjson.loads(raw), raw, max_ids)
    except orjson.JSONDecodeError:
        return None


def _accept(
    factory: sessionmaker[Session],
    caller: Caller,
    audience_id: str,
    action: str,
    ids: list[str] | None,
    body: bytes,
    settings: Settings,
    intake: Intake | None,
) -> Job:
    """One transaction, committed before the answer (a failed commit is an error, not a 202).

    With a write intake, first wait until it has committed what it accepted (so ``seq``
    keeps acceptance order), and afterwards let it take the audience's next writes. ``ids``
    None: a checked compact body, parsed here."""
    if ids is None:
        ids = orjson.loads(body)["ids"]
    generation = 0
    if intake is not None:
        intake.barrier()
        generation = intake.generation()
    with factory.begin() as session:
        job = static_members.accept_ids(
            session,
            caller=caller,
            audience_id=audience_id,
            action=action,
            ids=ids,
            body=body,
            data_dir=settings.data_dir,
            max_attempts=settings.job_max_attempts,
        )
    if intake is not None:
        intake.learn(caller.workspace_id, audience_id, generation)
    return job


def _replaying(raw: bytes, receive: Receive) -> Receive:
    """``receive`` with the body it already gave out given again, once."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": raw, "more_body": False}

    return replay


def install(app: FastAPI, router: APIRouter, path: str, jobs_router: APIRouter) -> None:
    """Put the lean path first in the app's routes, in front of ``router``'s POST ``path``;
    ``jobs_router`` has the ``get_job`` route its Location header points to."""
    full = _route(router, lambda route: route.path == path and "POST" in (route.methods or ()))
    job_route = _route(jobs_router, lambda route: route.name == "get_job")
    lean = Route(path, LeanMemberWrites(full, job_route), methods=["POST"], include_in_schema=False)
    app.router.routes.insert(0, lean)


def _route(router: APIRouter, wanted: Callable[[APIRoute], bool]) -> APIRoute:
    return next(route for route in router.routes if isinstance(route, APIRoute) and wanted(route))
