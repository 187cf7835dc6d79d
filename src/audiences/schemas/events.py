"""Events: what a profile did. The vocabulary shared by the rule language and the profile engines.

An event belongs to one profile, has a ``name`` (``event`` in rules), a ``timestamp`` (an instant,
UTC) and typed ``properties``. A property's type is one per workspace across every event name
(``amount`` is a float wherever it appears), so a rule over several event names reads one type and
an engine can keep each property in one typed column.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import SchemaValidator, core_schema

from audiences.schemas.attributes import AttributeType
from audiences.schemas.common import InputModel, Rfc3339

FLOAT_SUM_LIMIT = 1e12
"""The largest magnitude of a FLOAT event property value: ``sum`` and ``avg`` add up values as
whole micro-units (``rules.event_semantics``) and treat one beyond it (or not finite) as no
value, so its micro-units always fit a 64-bit integer; ingest refuses one
(``property_out_of_range``), so only values stored before that rule can be beyond it."""

RESERVED_EVENT_FIELDS = frozenset({"pid", "event", "timestamp", "event_id", "received_at"})
"""Names every stored event has; no property may be named like one of them."""


NO_PROPERTIES: Mapping[str, Any] = MappingProxyType({})
"""The properties of an event that has none (read-only, so one object serves every event)."""


class Event(NamedTuple):
    """One stored event as rules read it: its name, its time (aware, UTC) and its properties
    (declared properties only, unset ones left out).

    A named tuple, not a frozen dataclass: streaming evaluation reads the recent events of
    every profile a write touches, tens of thousands per call, and a frozen dataclass costs
    about three times as much to build."""

    name: str
    timestamp: datetime
    properties: Mapping[str, Any] = NO_PROPERTIES


@dataclass(frozen=True)
class EventSchema:
    """What rules over events are checked against: the workspace's property types and the
    event names seen so far (an unknown name in a rule is a warning, not an error: its events
    may not have arrived yet)."""

    properties: Mapping[str, AttributeType] = field(default_factory=dict)
    names: frozenset[str] = frozenset()


# The wire contract of /v1/events, /v1/event-properties and /v1/event-names.

MAX_EVENTS = 10_000
"""Most events one ``POST /v1/events`` may carry."""

EVENT_NAME = r"^[^\x00-\x1f]{1,200}$"
"""An event name: 1 to 200 characters, no control characters."""

ID_PATTERN = r"^[^\x00-\x1f]{1,512}$"
"""A profile's external id or an ``event_id``: 1 to 512 characters, no control characters."""


class EventWrite(InputModel):
    """One event to store. Nested objects in ``properties`` are flattened to dotted names."""

    profile_id: str = Field(
        pattern=ID_PATTERN, description="The profile's external id (created if new)."
    )
    event: str = Field(pattern=EVENT_NAME, description="The event's name.")
    timestamp: Rfc3339 | None = Field(
        default=None, description="When it happened (RFC 3339); the time received when left out."
    )
    properties: dict[str, Any] = Field(default_factory=dict)
    event_id: str | None = Field(
        default=None,
        pattern=ID_PATTERN,
        description="Your id of the event: a retry with the same id is answered as a duplicate.",
    )


class BatchedEvent(EventWrite):
    """An event of an :class:`EventBatch`, whose check for NUL characters covered it already
    (one pass over the whole body, not another for each of its 10,000 events)."""

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        return data


class EventBatch(InputModel):
    """Up to 10,000 events in one call."""

    events: list[BatchedEvent] = Field(min_length=1, max_length=MAX_EVENTS)


PLAIN_TIMESTAMP = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?"
    r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
"""The common form of an RFC 3339 time (upper-case ``T`` and ``Z``, at most microseconds, an
offset under a day), which ``datetime.fromisoformat`` reads as pydantic does."""


def _text(pattern: str) -> core_schema.CoreSchema:
    return core_schema.str_schema(pattern=pattern, strict=True)


def _optional(schema: core_schema.CoreSchema) -> core_schema.TypedDictField:
    nullable = core_schema.nullable_schema(schema)
    return core_schema.typed_dict_field(
        core_schema.with_default_schema(nullable, default=None), required=False
    )


PLAIN_BATCH = SchemaValidator(
    core_schema.typed_dict_schema(
        {
            "events": core_schema.typed_dict_field(
                core_schema.list_schema(
                    core_schema.typed_dict_schema(
                        {
                            "profile_id": core_schema.typed_dict_field(_text(ID_PATTERN)),
                            "event": core_schema.typed_dict_field(_text(EVENT_NAME)),
                            "timestamp": _optional(_text(PLAIN_TIMESTAMP)),
                            "properties": core_schema.typed_dict_field(
                                core_schema.with_default_schema(
                                    core_schema.is_instance_schema(dict), default_factory=dict
                                ),
                                required=False,
                            ),
                            "event_id": _optional(_text(ID_PATTERN)),
                        },
                        extra_behavior="forbid",
                    ),
                    min_length=1,
                    max_length=MAX_EVENTS,
                    strict=True,
                )
            )
        },
        extra_behavior="forbid",
    )
)
"""A quick check of a parsed :class:`EventBatch` body (JSON data, NUL characters already ruled
out) that builds no models: each event a plain dict of its five fields, ``timestamp`` left as
text in :data:`PLAIN_TIMESTAMP`'s form. It accepts only bodies :class:`EventBatch` accepts,
with the same values, and refuses the rest without saying why: the models read those again,
and accept them or say what is wrong (``api.event_bodies``). Building 10,000 models took
about half of a 10,000-event call's validation and records."""


_EVENT_SCHEMA = EventWrite.model_json_schema()
EVENT_WRITE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        _EVENT_SCHEMA,
                        {
                            "type": "object",
                            "title": "EventBatch",
                            "additionalProperties": False,
                            "required": ["events"],
                            "properties": {
                                "events": {
                                    "type": "array",
                                    "minItems": 1,
                                    "maxItems": MAX_EVENTS,
                                    "items": _EVENT_SCHEMA,
                                }
                            },
                        },
                    ]
                }
            }
        },
    }
}
"""The body, declared by hand: one event or a batch, parsed by the route (which first counts
the events, so that an oversized batch answers 413 before any validation)."""


class EventWriteResult(BaseModel):
    """One event's outcome: 201 stored, 200 a duplicate of a stored ``event_id`` (not stored
    again), or 422 with its problems (nothing stored, no profile created)."""

    index: int
    profile_id: str
    event_id: str | None = None
    status: int
    duplicate: bool = False
    problem: dict[str, Any] | None = None


class EventWriteResults(BaseModel):
    """The answer to ``POST /v1/events``: a result per event, in order, and the counts."""

    results: list[EventWriteResult]
    written: int
    duplicates: int
    failed: int


class EventOut(BaseModel):
    """A stored event."""

    event: str
    timestamp: datetime
    properties: dict[str, Any]
    event_id: str | None = None
    received_at: datetime


class EventPage(BaseModel):
    """A page of a profile's events, newest first."""

    data: list[EventOut]
    has_more: bool
    next_cursor: str | None = None


class EventPropertyDeclare(BaseModel):
    """The body of ``PUT /v1/event-properties/{name}``: the property's type and meaning."""

    model_config = ConfigDict(extra="forbid")

    type: AttributeType
    description: str | None = Field(default=None, max_length=1000)


class EventPropertyOut(BaseModel):
    """A declared or inferred event property (one type across every event name)."""

    name: str
    type: AttributeType
    description: str | None = None
    inferred: bool = Field(description="True when the type was inferred from the first value.")
    created_at: datetime


class EventNameOut(BaseModel):
    """An event name the workspace has received."""

    name: str
    first_seen_at: datetime
    last_seen_at: datetime
    count: int = Field(description="Events received under this name (duplicates not counted).")


class EventFileFormat(StrEnum):
    """What an uploaded event file holds."""

    CSV = "csv"
    TSV = "tsv"
    NDJSON = "ndjson"
    PARQUET = "parquet"


_TEXT_FILE = {"schema": {"type": "string"}}
EVENT_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": (
            "The file: CSV or TSV (columns `profile_id`, `event`, optionally `timestamp` and"
            " `event_id`, the others properties), NDJSON (one `POST /v1/events` object per"
            " line), gzipped or not, or Parquet (columns as CSV's, `format=parquet`), as the"
            " raw body or as the `file` part of a form."
        ),
        "content": {
            "text/csv": _TEXT_FILE,
            "text/tab-separated-values": _TEXT_FILE,
            "application/x-ndjson": _TEXT_FILE,
            "application/gzip": {"schema": {"type": "string", "format": "binary"}},
            "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            },
        },
    }
}
"""The upload, streamed to disk by the route (never parsed by FastAPI)."""
