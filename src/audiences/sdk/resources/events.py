"""``/v1/events``, ``/v1/profiles/{id}/events``, ``/v1/events/imports`` and
``/v1/event-names``: what profiles did, written one at a time, in batches or from a file.

A batch answers a result per event: refused events (207) are data in the answer, not an
exception. ``POST /v1/events`` takes no ``Idempotency-Key``; an event's own ``event_id`` is
what makes it safe to send twice, so a batch is retried only when every event carries one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, TypeAdapter

from audiences.schemas.events import (
    EventNameOut,
    EventOut,
    EventPage,
    EventWrite,
    EventWriteResult,
    EventWriteResults,
)
from audiences.schemas.jobs import Job
from audiences.sdk._call import Call, clean, endpoint, model, rfc3339
from audiences.sdk._resource import (
    AsyncResource,
    SyncResource,
    pages,
    pages_async,
    sends,
    sends_async,
)
from audiences.sdk.resources.imports import CONTENT_TYPES, Uploaded, achunks, chunks, file_key

PATH = "/v1/events"
EventLike = EventWrite | Mapping[str, Any]
"""An event to send: the wire model, or the same fields as a mapping."""
_NAMES = TypeAdapter(list[EventNameOut])


def _wire(event: EventLike) -> dict[str, Any]:
    if isinstance(event, BaseModel):
        return event.model_dump(mode="json", exclude_none=True)
    return dict(event)


def _one(response: httpx.Response) -> EventWriteResult:
    return EventWriteResults.model_validate_json(response.content).results[0]


class Calls:
    """The requests of the event resource."""

    @staticmethod
    def send(events: Iterable[EventLike]) -> Call[EventWriteResults]:
        """Store up to 10,000 events in one call: a result per event, in order, and the counts
        (``written``, ``duplicates``, ``failed``); refused events are results with their
        ``problem``. A body that breaks the schema is refused whole (``Unprocessable``)."""
        body = [_wire(event) for event in events]
        # A retry re-sends every event: harmless only when each one is deduplicated by its id.
        safe = all(item.get("event_id") is not None for item in body)
        return Call("POST", PATH, model(EventWriteResults), json={"events": body}, safe=safe)

    @staticmethod
    def send_one(
        profile_id: str,
        event: str,
        *,
        properties: Mapping[str, Any] | None = None,
        timestamp: datetime | str | None = None,
        event_id: str | None = None,
    ) -> Call[EventWriteResult]:
        """Store one event and return its result (201 stored, 200 a duplicate); a refused one
        raises ``Unprocessable`` (``event_invalid``), as the API answers a single event."""
        when = None if timestamp is None else rfc3339(timestamp)
        body = {"profile_id": profile_id, "event": event, "properties": dict(properties or {})}
        body |= clean({"timestamp": when, "event_id": event_id})
        return Call("POST", PATH, _one, json=body, safe=event_id is not None)

    @staticmethod
    def history(
        profile_id: str,
        event: str | list[str] | None = None,
        *,
        limit: int | None = None,
    ) -> Call[EventPage]:
        """A profile's events, newest first (``event``: only these names)."""
        names = [event] if isinstance(event, str) else event
        params: dict[str, Any] = clean({"limit": limit})
        if names:
            params["event"] = list(names)  # repeated, not joined: names may hold commas
        return Call(
            "GET", endpoint("/v1/profiles/{}/events", profile_id), model(EventPage), params=params
        )

    @staticmethod
    def import_file(
        file: str | Path,
        *,
        format: str | None = None,
        on_upload: Uploaded | None = None,
        idempotency_key: str | None = None,
    ) -> Call[Job]:
        """Upload a file of events (CSV, TSV, NDJSON, gzipped or not, or Parquet), streamed
        from disk: the ``events.import`` job (``client.jobs.wait(job)`` follows it). ``format``
        overrides the type read from the suffix (``.gz`` files need it unless they hold CSV).
        The same file uploaded the same way again answers the first import (its key is derived
        from the content, as ``client.imports.create``'s is)."""
        path = Path(file)
        with path.open("rb"):  # unreadable or missing: OSError now, before any request
            pass
        suffix = path.suffix.lower()
        types = CONTENT_TYPES | {".parquet": "application/vnd.apache.parquet"}
        headers = {
            "Content-Type": types.get(suffix, "text/csv"),
            "Content-Length": str(path.stat().st_size),
            "Idempotency-Key": idempotency_key
            or file_key(path, f"POST {PATH}/imports", clean({"format": format})),
        }
        return Call(
            "POST",
            f"{PATH}/imports",
            model(Job),
            params=clean({"format": format}),
            headers=headers,
            body=lambda: chunks(path, on_upload),
            abody=lambda: achunks(path, on_upload),
        )

    @staticmethod
    def names() -> Call[list[EventNameOut]]:
        """Every event name received, with when it was first and last seen and how often."""
        return Call(
            "GET", "/v1/event-names", lambda response: _NAMES.validate_json(response.content)
        )


class Events(SyncResource):
    """Events: ``client.events``."""

    send = sends(Calls.send)
    send_one = sends(Calls.send_one)
    history = pages(Calls.history, EventOut)
    import_file = sends(Calls.import_file)


class AsyncEvents(AsyncResource):
    """Events: ``client.events`` of an :class:`AsyncClient`."""

    send = sends_async(Calls.send)
    send_one = sends_async(Calls.send_one)
    history = pages_async(Calls.history, EventOut)
    import_file = sends_async(Calls.import_file)


class EventNames(SyncResource):
    """Event names received: ``client.event_names``."""

    list = sends(Calls.names)


class AsyncEventNames(AsyncResource):
    """Event names received: ``client.event_names`` of an :class:`AsyncClient`."""

    list = sends_async(Calls.names)
