"""Audience request and response bodies."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from audiences.schemas.common import Relationship

KEY_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
Label = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^\S(.*\S)?$")]
MAX_RULE_CHARS = 10_000


class AudienceKind(StrEnum):
    """How membership is defined: uploaded ids, a rule, or a mirror of a list held elsewhere."""

    STATIC = "static"
    DYNAMIC = "dynamic"
    EXTERNAL = "external"


class LifecycleState(StrEnum):
    """Draft audiences are being built; published ones are in use; inactive ones are parked."""

    DRAFT = "draft"
    PUBLISHED = "published"
    INACTIVE = "inactive"


class RefreshMode(StrEnum):
    """When membership is recomputed: on request, every interval, or as profiles change."""

    MANUAL = "manual"
    SCHEDULED = "scheduled"
    STREAMING = "streaming"


class RefreshPolicy(BaseModel):
    """When an audience is evaluated; ``interval_seconds`` only (and always) with ``scheduled``."""

    model_config = ConfigDict(extra="forbid")

    mode: RefreshMode = RefreshMode.MANUAL
    interval_seconds: int | None = Field(default=None, ge=60, le=31_536_000)

    @model_validator(mode="after")
    def _interval_matches_mode(self) -> RefreshPolicy:
        if self.mode is RefreshMode.SCHEDULED and self.interval_seconds is None:
            raise ValueError("a scheduled refresh policy needs interval_seconds")
        if self.mode is not RefreshMode.SCHEDULED and self.interval_seconds is not None:
            raise ValueError("interval_seconds applies only to the scheduled mode")
        return self


class AudienceSource(BaseModel):
    """Where an external audience's list lives (a CRM, an ad platform, another engine)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, description="The system holding the list.")
    external_id: str | None = Field(
        default=None, max_length=255, description="The list's id in that system."
    )


class AudienceWrite(BaseModel):
    """The writable fields of an audience: the body of POST and PUT, and what PATCH edits."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(
        pattern=KEY_PATTERN, description="Unique slug in the workspace, used by `in_audience()`."
    )
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=5000)
    kind: AudienceKind
    rule: str | None = Field(
        default=None,
        max_length=MAX_RULE_CHARS,
        description="The membership rule of a dynamic audience (required for dynamic only).",
    )
    group_id: str | None = Field(default=None, max_length=36)
    labels: list[Label] = Field(default_factory=list, max_length=50)
    metadata: dict[str, Any] = Field(default_factory=dict)
    lifecycle_state: LifecycleState = LifecycleState.DRAFT
    archived: bool = False
    refresh_policy: RefreshPolicy = Field(default_factory=RefreshPolicy)
    ttl_days: int | None = Field(
        default=None, ge=1, le=3650, description="Static only: members leave this long after."
    )
    source: AudienceSource | None = Field(default=None, description="External audiences only.")

    @model_validator(mode="after")
    def _fields_match_kind(self) -> AudienceWrite:
        if self.kind is AudienceKind.DYNAMIC and not (self.rule and self.rule.strip()):
            raise ValueError("a dynamic audience needs a rule")
        if self.kind is not AudienceKind.DYNAMIC and self.rule is not None:
            raise ValueError(f"a {self.kind.value} audience has no rule")
        if self.ttl_days is not None and self.kind is not AudienceKind.STATIC:
            raise ValueError("ttl_days applies only to static audiences")
        if self.source is not None and self.kind is not AudienceKind.EXTERNAL:
            raise ValueError("source applies only to external audiences")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be unique")
        return self


class EvaluationState(BaseModel):
    """Freshness of the membership: when it was computed, how the last run went."""

    status: str | None = Field(default=None, description="Null until the first evaluation.")
    computed_at: datetime | None = None
    last_error: str | None = None


class Audience(AudienceWrite):
    """An audience as the API returns it."""

    model_config = ConfigDict(extra="forbid")

    id: str
    size: int | None = Field(default=None, description="Members as of `evaluation.computed_at`.")
    evaluation: EvaluationState
    version: int = Field(description="Increases on every change; the ETag is its quoted value.")
    created_at: datetime
    updated_at: datetime
    created_by: str | None = None
    updated_by: str | None = None
    group: Relationship | None = Field(default=None, description="With `include=group` only.")


class BulkGet(BaseModel):
    """Ids to fetch in one call."""

    model_config = ConfigDict(extra="forbid")

    ids: list[Annotated[str, StringConstraints(min_length=1, max_length=64)]] = Field(min_length=1)


class BulkItem(BaseModel):
    """One id's outcome in a bulk-get: its status and either the resource or a problem."""

    id: str
    status: int
    body: Audience | None = None
    problem: dict[str, Any] | None = None


class BulkResult(BaseModel):
    """The 207 body of a bulk-get, in the order the ids were asked for."""

    results: list[BulkItem]
