"""The body of ``POST /v1/events`` read into records: one event, or a batch of up to 10,000.

The body is parsed with orjson; a batch over the limit answers 413 before validation. A body
that breaks the declared schema is refused whole (``events_invalid``, each problem located by
the event's index): the client's code is wrong, not one event's data.

A batch is first read on a quick path that builds no models: ``schemas.events.PLAIN_BATCH``
checks it into plain dicts (pydantic-core), ``datetime.fromisoformat`` reads the times and
the records are made from the columns in C loops. What that path does not accept is read
again through the models (:class:`EventBatch`, :class:`EventWrite`), which accept it or say
what is wrong, so every answer is the models'. For 10,000 events the quick path took about a
third of the CPU time of models and records built one by one (``bench/README.md``,
"Behaviour").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from itertools import compress, count, repeat
from operator import itemgetter
from typing import Any, NamedTuple

import orjson
from pydantic import ValidationError as PydanticValidationError

from audiences.api.problems import problem_body
from audiences.engines.base import EventRecord, EventResult
from audiences.errors import BadRequest, ErrorDetail, Unprocessable
from audiences.schemas.events import PLAIN_BATCH, EventBatch, EventWrite
from audiences.services import events


class EventBody(NamedTuple):
    """The records of a body, in order, the time it was received (theirs when they say none),
    and whether it held one event (``single``), not a batch."""

    records: list[EventRecord]
    received: datetime
    single: bool


def parse(raw: bytes) -> Any:
    """The body's JSON data; ``malformed_json`` when it is not JSON."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("the body is not valid JSON", code="malformed_json") from None


def read(raw: bytes, data: Any, *, max_events: int, received: datetime) -> EventBody:
    """The records of a parsed body (``raw`` its text), timed ``received`` when they say no
    time; ``too_many_events`` over ``max_events``, ``events_invalid`` for a body that breaks
    the schema."""
    batch = isinstance(data, dict) and "events" in data
    if batch and isinstance(data["events"], list):
        events.check_batch_size(len(data["events"]), max_events)
    if batch:
        quick = _quick_records(raw, data, received)
        if quick is not None:
            return EventBody(quick, received, single=False)
    try:
        body = (EventBatch if batch else EventWrite).model_validate(data)
    except PydanticValidationError as exc:
        details = [_detail(error) for error in exc.errors()]
        raise Unprocessable(
            f"{len(details)} problem(s) in the events; nothing was written",
            code="events_invalid",
            errors=details[:100],
        ) from None
    given = body.events if isinstance(body, EventBatch) else [body]
    records = [
        EventRecord(e.profile_id, e.event, e.timestamp or received, e.properties, e.event_id)
        for e in given
    ]
    return EventBody(records, received, single=not batch)


def _quick_records(raw: bytes, data: Any, received: datetime) -> list[EventRecord] | None:
    """The records of a batch :data:`PLAIN_BATCH` accepts, None for any other body.

    A NUL character can only be in JSON text as ``\\u0000``: a body holding that text is left
    to the models, whose check says where it is."""
    if b"\\u0000" in raw:
        return None
    try:
        given = PLAIN_BATCH.validate_python(data)["events"]
    except PydanticValidationError:
        return None
    texts = list(map(_TIMESTAMP, given))
    if any(map(_EDGE_YEAR, filter(None, texts))):  # may fall outside years 1-9999 in UTC
        return None
    try:
        if None in texts:
            times = [received if t is None else datetime.fromisoformat(t) for t in texts]
        else:
            times = list(map(datetime.fromisoformat, texts))
    except ValueError:  # a day the month does not have: the models say so
        return None
    columns = zip(
        map(_PROFILE_ID, given),
        map(_EVENT, given),
        times,
        map(_PROPERTIES, given),
        map(_ID, given),
        strict=True,
    )
    # EventRecord's own constructor is a Python function; tuple.__new__ makes the same tuple
    # from the columns' rows without a Python call each.
    return list(map(tuple.__new__, repeat(EventRecord), columns))


_EDGE_YEAR = re.compile(r"0001|9999").match
"""A time in the first or last year, which an offset can move out of the calendar in UTC: the
models check those (``schemas.common.Rfc3339``)."""
_PROFILE_ID, _EVENT, _TIMESTAMP, _PROPERTIES, _ID = map(
    itemgetter, ("profile_id", "event", "timestamp", "properties", "event_id")
)


def answer(
    records: Sequence[EventRecord], results: Sequence[EventResult], request_id: str
) -> tuple[int, dict[str, Any]]:
    """The answer's status (201 all stored, 200 all duplicates, 207 some refused) and body: a
    result per event, in order (each refusal a problem), and the counts."""
    duplicate = list(map(_DUPLICATE, results))
    rendered = [
        {
            "index": n,
            "profile_id": record[0],
            "event_id": record[4],
            "status": 200 if repeated else 201,
            "duplicate": repeated,
        }
        for n, record, repeated in zip(count(), records, duplicate)
    ]
    failed = 0
    for n in compress(count(), map(_ERRORS, results)):
        rendered[n]["status"] = 422
        rendered[n]["problem"] = problem_body(refusal(results[n]), request_id)
        failed += 1
    duplicates = sum(duplicate)
    written = len(rendered) - failed - duplicates
    status = 207 if failed else 201 if written else 200
    return status, {
        "results": rendered,
        "written": written,
        "duplicates": duplicates,
        "failed": failed,
    }


def refusal(result: EventResult) -> Unprocessable:
    """The problem of a refused event."""
    return Unprocessable("the event was refused", code="event_invalid", errors=list(result.errors))


_DUPLICATE, _ERRORS = itemgetter(2), itemgetter(3)
"""``EventResult.duplicate`` and ``.errors``, read in C (positions pinned by a test in
``tests/engines/test_event_writes.py``, as ``EventRecord``'s read above are)."""


def _detail(error: Any) -> ErrorDetail:
    location = tuple(error["loc"])
    code = "timestamp_invalid" if location and location[-1] == "timestamp" else str(error["type"])
    return ErrorDetail(code, str(error["msg"]), ("body", *location))
