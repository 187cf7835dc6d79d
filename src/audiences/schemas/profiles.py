"""Profile request and response bodies: single and batch upserts, reads, a profile's audiences."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, StrictBool

from audiences.schemas.common import InputModel

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


class EvaluateRequest(InputModel):
    """A profile to evaluate: a stored one by id, attributes (of a profile not stored), or both
    (the attributes then override the stored ones)."""

    profile_id: str | None = Field(default=None, pattern=EXTERNAL_ID)
    attributes: dict[str, Any] = Field(default_factory=dict)
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
