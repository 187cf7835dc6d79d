"""Profile request and response bodies: single and batch upserts, reads, a profile's audiences."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, StrictBool

from audiences.schemas.common import InputModel, Rfc3339
from audiences.schemas.events import EVENT_NAME

MAX_BATCH = 10_000
"""Most profiles one batch call may carry."""

EXTERNAL_ID = r"^[^\x00-\x1f]{1,512}$"


class ProfileWrite(InputModel):
    """Attributes to merge into a profile: keys not sent are kept, ``null`` clears one."""

    attributes: dict[str, Any] = Field(default_factory=dict)


class ProfileRecord(InputModel):
    """One profile of a batch."""

    id: str = Field(pattern=EXTERNAL_ID, description="The profile's external id.")
    attributes: dict[str, Any] = Field(default_factory=dict)


class ProfileBatch(InputModel):
    """Up to 10,000 profiles to upsert in one call."""

    profiles: list[ProfileRecord] = Field(min_length=1, max_length=MAX_BATCH)


class Profile(BaseModel):
    """A stored profile."""

    id: str = Field(description="The external id.")
    attributes: dict[str, Any]
    updated_at: datetime


class ProfileResult(BaseModel):
    """One record's outcome in a batch: 200 written (201 created), or 422 with its problems."""

    id: str
    status: int
    created: bool = False
    problem: dict[str, Any] | None = None


class BatchResult(BaseModel):
    """The answer to a batch: a result per record, in order, and the counts."""

    results: list[ProfileResult]
    written: int
    failed: int


class ProfileAudience(BaseModel):
    """An audience a profile belongs to, as of when its membership was computed."""

    id: str
    key: str
    name: str
    computed_at: datetime | None


class ProfileAudiences(BaseModel):
    """Every audience a profile is in."""

    profile_id: str
    audiences: list[ProfileAudience]


MAX_EVALUATE_EVENTS = 1_000
"""Most events one ``POST /v1/evaluate`` may carry."""


class EvaluateEvent(InputModel):
    """An event the profile is evaluated with, as if stored (nothing is)."""

    event: str = Field(pattern=EVENT_NAME, description="The event's name.")
    timestamp: Rfc3339 | None = Field(
        default=None, description="When it happened (RFC 3339); the evaluation's time if left out."
    )
    properties: dict[str, Any] = Field(
        default_factory=dict,
        description="Declared properties are checked against their types; others are ignored.",
    )


class EvaluateRequest(InputModel):
    """A profile to evaluate: a stored one by id, attributes (of a profile not stored), or both
    (the attributes then override the stored ones); and events, added to the stored
    profile's own."""

    profile_id: str | None = Field(default=None, pattern=EXTERNAL_ID)
    attributes: dict[str, Any] = Field(default_factory=dict)
    events: list[EvaluateEvent] = Field(
        default_factory=list,
        max_length=MAX_EVALUATE_EVENTS,
        description=(
            "At most 1,000 events, evaluated with the stored profile's events (rules over "
            "events read both)."
        ),
    )
    explain: StrictBool = Field(default=True, description="Return each rule's evaluation tree.")


class AudienceVerdict(BaseModel):
    """One audience's answer for the profile."""

    id: str
    key: str
    name: str
    kind: str
    member: bool
    explanation: dict[str, Any] | None = Field(
        default=None, description="Dynamic audiences: the rule tree with each node's value."
    )


class EvaluateResult(BaseModel):
    """Which audiences the profile would be in now, and why; nothing was stored."""

    profile_id: str | None
    audiences: list[AudienceVerdict]
