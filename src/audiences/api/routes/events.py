"""``/v1/events``, a profile's events and the event names seen."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from audiences.api import event_bodies, paths, uploads
from audiences.api.content import RequireJson
from audiences.api.deps import (
    ProfileId,
    ReadCaller,
    RuntimeDep,
    SessionDep,
    SettingsDep,
    WriteCaller,
)
from audiences.api.preconditions import IDEMPOTENCY_DOC
from audiences.api.problems import request_id_of, responses
from audiences.api.queries import KnownQuery
from audiences.engines.base import EventPosition, StoredEvent
from audiences.errors import InvalidParameter
from audiences.kit.clock import utcnow
from audiences.kit.cursors import CursorError, decode_cursor, encode_cursor
from audiences.kit.ids import new_id
from audiences.schemas.common import MAX_PAGE_SIZE
from audiences.schemas.events import (
    EVENT_NAME,
    EVENT_UPLOAD_BODY,
    EVENT_WRITE_BODY,
    EventFileFormat,
    EventNameOut,
    EventOut,
    EventPage,
    EventWriteResults,
)
from audiences.schemas.jobs import Job
from audiences.services import event_imports, events, imports, jobs
from audiences.services.import_formats import ImportFormat

router = APIRouter(tags=["events"], dependencies=[KnownQuery])


async def read_events(request: Request, settings: SettingsDep) -> event_bodies.EventBody:
    """The body's records (see :mod:`audiences.api.event_bodies`), timed when it was read."""
    raw = await request.body()
    data = event_bodies.parse(raw)
    return event_bodies.read(raw, data, max_events=settings.max_events_per_call, received=utcnow())


@router.post(
    "/v1/events",
    status_code=201,
    response_model=EventWriteResults,
    dependencies=[RequireJson],
    openapi_extra=EVENT_WRITE_BODY,
    responses={
        200: {"model": EventWriteResults, "description": "Every event was a duplicate."},
        207: {"model": EventWriteResults, "description": "Some events were refused."},
        **responses(400, 401, 403, 413, 415, 422, 429),
    },
)
def write_events(
    body: Annotated[event_bodies.EventBody, Depends(read_events)],
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    caller: WriteCaller,
    runtime: RuntimeDep,
) -> Response:
    """Store one event, or up to 10,000 (`{"events": [...]}`): a result per event; 201 when all
    were stored, 200 when all were duplicates, 207 when some were refused (each says why)."""
    limits = events.Limits(
        settings.max_events_per_call,
        timedelta(seconds=settings.max_event_future_seconds),
        timedelta(hours=settings.event_dedupe_window_hours),
    )
    results = events.write(
        session,
        workspace_id=caller.workspace_id,
        runtime=runtime,
        records=body.records,
        limits=limits,
        received_at=body.received,
    )
    if body.single and not results[0].ok:
        raise event_bodies.refusal(results[0])
    status, out = event_bodies.answer(body.records, results, request_id_of(request))
    # orjson: the standard library's encoder took 15 ms of a 10,000-event answer.
    return Response(orjson.dumps(out), status_code=status, media_type="application/json")


EventNames = Annotated[
    list[str] | None,
    Query(
        max_length=100,
        description="Only events with this name; repeat it for several (names may hold commas).",
        json_schema_extra={"items": {"type": "string", "pattern": EVENT_NAME}},
    ),
]


@router.get(
    "/v1/profiles/{profile_id}/events",
    response_model=EventPage,
    responses=responses(400, 401, 404, 422, 429),
)
def list_profile_events(
    profile_id: ProfileId,
    request: Request,
    session: SessionDep,
    caller: ReadCaller,
    runtime: RuntimeDep,
    limit: Annotated[
        int, Query(ge=1, le=MAX_PAGE_SIZE, description="Events per page (default 50).")
    ] = 50,
    cursor: Annotated[
        str | None, Query(max_length=200, description="`next_cursor` of the previous page.")
    ] = None,
    event: EventNames = None,
) -> Response:
    """A profile's events, newest first (ties on the time in one fixed order), paged."""
    names = sorted(set(event or ()))
    page = events.of_profile(
        session,
        caller=caller,
        runtime=runtime,
        external_id=profile_id,
        limit=limit,
        after=_position(cursor, names),
        names=names,
    )
    next_cursor = None
    headers = {}
    if page.next is not None:
        position = {"t": page.next.timestamp.isoformat(), "k": page.next.skip, "e": names}
        next_cursor = encode_cursor(position)
        url = paths.url_of(request).include_query_params(cursor=next_cursor)
        headers["Link"] = f'<{url}>; rel="next"'
    body = {
        "data": [_event(stored) for stored in page.events],
        "has_more": next_cursor is not None,
        "next_cursor": next_cursor,
    }
    return JSONResponse(body, headers=headers)


def _position(cursor: str | None, names: list[str]) -> EventPosition | None:
    if cursor is None:
        return None
    try:
        payload = decode_cursor(cursor)
        if payload.get("e") != names or not isinstance(payload.get("k"), int):
            raise CursorError("the cursor was issued for another listing")
        return EventPosition(datetime.fromisoformat(str(payload["t"])), payload["k"])
    except (CursorError, KeyError, ValueError) as exc:
        raise InvalidParameter(f"invalid cursor: {exc}", code="invalid_cursor") from exc


def _event(stored: StoredEvent) -> dict[str, Any]:
    return EventOut(
        event=stored.event.name,
        timestamp=stored.event.timestamp,
        properties=dict(stored.event.properties),
        event_id=stored.event_id,
        received_at=stored.received_at,
    ).model_dump(mode="json")


@router.get("/v1/event-names", response_model=list[EventNameOut], responses=responses(401, 429))
def list_event_names(session: SessionDep, caller: ReadCaller) -> Response:
    """Every event name the workspace has received, by name, with when and how often."""
    rows = events.names(session, caller=caller)
    return JSONResponse(
        [
            EventNameOut(
                name=row.name,
                first_seen_at=row.first_seen_at,
                last_seen_at=row.last_seen_at,
                count=row.count,
            ).model_dump(mode="json")
            for row in rows
        ]
    )


@router.post(
    "/v1/events/imports",
    status_code=202,
    response_model=Job,
    openapi_extra=EVENT_UPLOAD_BODY,
    responses={
        202: {"model": Job, "description": "Accepted: the `events.import` job."},
        **responses(400, 401, 403, 413, 415, 422, 429),
    },
)
async def import_events(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    caller: WriteCaller,
    format: Annotated[
        EventFileFormat | None,
        Query(description="The file's format; default from its content type, else `csv`."),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        Header(alias="Idempotency-Key", pattern=r"^[!-~]{1,255}$", description=IDEMPOTENCY_DOC),
    ] = None,
) -> Response:
    """Import a file of events (CSV, TSV or NDJSON), streamed to disk: 202 with the
    `events.import` job (progress, counts, row errors; all of them at `errors.csv`)."""
    directory = imports.folder(settings.data_dir, caller.workspace_id, new_id())
    try:
        received = await uploads.receive(request, directory / imports.UPLOAD)
        fmt = format or _named(request, received.named_format)
        job = await run_in_threadpool(
            event_imports.accept,
            session,
            caller=caller,
            upload=directory / imports.UPLOAD,
            fmt=fmt,
            digest=received.digest,
            max_attempts=settings.job_max_attempts,
            idempotency_key=idempotency_key,
        )
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    headers = {"Location": str(request.url_for("get_job", job_id=job.id).path)}
    if job.payload.get("upload") != directory.name:
        shutil.rmtree(directory, ignore_errors=True)
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(jobs.to_model(job).model_dump(mode="json"), 202, headers=headers)


def _named(request: Request, named: ImportFormat | None) -> EventFileFormat:
    """The format the upload's content type names (Parquet's too), else CSV."""
    if request.headers.get("content-type", "").startswith(PARQUET_TYPES):
        return EventFileFormat.PARQUET
    return EventFileFormat(named.value) if named in READABLE else EventFileFormat.CSV


PARQUET_TYPES = ("application/vnd.apache.parquet", "application/x-parquet")
READABLE = {ImportFormat.CSV, ImportFormat.TSV, ImportFormat.NDJSON}
