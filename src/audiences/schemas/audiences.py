"""Audience request and response bodies."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    TypeAdapter,
)

from audiences.schemas.common import (
    ID_PATTERN,
    JSON_INTEGER,
    InputModel,
    ListFilter,
    ListParams,
    Relationship,
    Rfc3339,
    StorableJsonObject,
    enum_values,
    names_pattern,
    sort_pattern,
    sparse_model,
)
from audiences.schemas.syncs import SyncSource, SyncState, push_source

KEY_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
LABEL_PATTERN = r"^[A-Za-z0-9_./:@+-]{1,100}$"
Label = Annotated[str, StringConstraints(pattern=LABEL_PATTERN)]
"""A tag such as ``core``, ``core/C1`` or ``team:growth``: ASCII letters, digits and ``_./:@+-``."""
MAX_RULE_CHARS = 10_000


def _unique(labels: list[str]) -> list[str]:
    if len(set(labels)) != len(labels):
        raise ValueError("labels must be unique")
    return labels


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


class ManualRefresh(BaseModel):
    """Evaluated only when asked (``POST …/refresh``)."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal[RefreshMode.MANUAL]


class ScheduledRefresh(BaseModel):
    """Evaluated every ``interval_seconds``."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal[RefreshMode.SCHEDULED]
    interval_seconds: Annotated[int, Field(ge=60, le=31_536_000), JSON_INTEGER]


class StreamingRefresh(BaseModel):
    """Evaluated the moment a profile changes (rules that depend on the clock cannot be)."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal[RefreshMode.STREAMING]


RefreshPolicy = Annotated[
    ManualRefresh | ScheduledRefresh | StreamingRefresh, Field(discriminator="mode")
]


Labels = Annotated[
    list[Label],
    Field(max_length=50, json_schema_extra={"uniqueItems": True}),
    AfterValidator(_unique),
]


class _AudienceFields(InputModel):
    """Writable fields every kind of audience has."""

    key: str = Field(
        pattern=KEY_PATTERN, description="Unique slug in the workspace, used by `in_audience()`."
    )
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=5000)
    group_id: str | None = Field(default=None, max_length=36)
    labels: Labels = Field(default_factory=list)
    metadata: StorableJsonObject = Field(default_factory=dict)
    lifecycle_state: LifecycleState = LifecycleState.DRAFT
    archived: StrictBool = False
    refresh_policy: RefreshPolicy = Field(
        default_factory=lambda: ManualRefresh(mode=RefreshMode.MANUAL)
    )


class StaticAudienceWrite(_AudienceFields):
    """An audience whose members are uploaded or added by id."""

    kind: Literal[AudienceKind.STATIC]
    ttl_days: Annotated[int, Field(ge=1, le=3650), JSON_INTEGER] | None = Field(
        default=None, description="Members leave this many days after joining."
    )


class DynamicAudienceWrite(_AudienceFields):
    """An audience whose members are the profiles its rule holds true for."""

    kind: Literal[AudienceKind.DYNAMIC]
    # No length bounds here: the rule validator judges size (rule_too_large) and emptiness, so
    # every rule problem is reported the same way, located at ("body", "rule").
    rule: str | dict[str, Any] = Field(
        description=(
            "The membership rule: SQL boolean text (`country = 'US' AND age >= 30`) or the JSON "
            'tree form (`{"all": [{"field": "country", "op": "equals", "value": "US"}]}`), '
            f"at most {MAX_RULE_CHARS:,} characters. "
            "Stored and returned as canonical text, with the JSON form in `rule_json`."
        )
    )


class ExternalAudienceWrite(_AudienceFields):
    """A mirror of a list held in another system."""

    kind: Literal[AudienceKind.EXTERNAL]
    source: SyncSource = Field(
        default_factory=push_source,
        description=(
            "Where the members come from: a `file` (URL or path, synced on the refresh "
            "policy), a `sql` query over the workspace's profiles, or `push` (the default: "
            "written by the client as a static audience's)."
        ),
    )


AudienceWrite = Annotated[
    StaticAudienceWrite | DynamicAudienceWrite | ExternalAudienceWrite,
    Field(discriminator="kind"),
]
"""The body of POST and PUT, and what PATCH edits: the fields depend on ``kind``."""

AUDIENCE_WRITE: TypeAdapter[StaticAudienceWrite | DynamicAudienceWrite | ExternalAudienceWrite]
AUDIENCE_WRITE = TypeAdapter(AudienceWrite)
WRITABLE_FIELDS = frozenset(
    name
    for model in (StaticAudienceWrite, DynamicAudienceWrite, ExternalAudienceWrite)
    for name in model.model_fields
)


class EvaluationState(BaseModel):
    """Freshness of the membership: when it was computed, how the last run went."""

    status: str | None = Field(
        default=None, description="`succeeded` or `failed`: the last run; null before the first."
    )
    computed_at: datetime | None = Field(
        default=None, description="When the member set last changed or was computed (as of)."
    )
    last_error: str | None = Field(default=None, description="Why the last run failed.")
    last_run_id: str | None = None
    last_refreshed_at: datetime | None = Field(
        default=None, description="When the last successful run finished."
    )
    next_refresh_at: datetime | None = Field(
        default=None,
        description="Scheduled audiences: when the next run is due (sooner after a failure).",
    )
    consecutive_failures: int = Field(default=0, description="Failed runs since the last success.")


class EvaluationMode(BaseModel):
    """Whether a rule can follow profile writes as they happen, and why (or why not)."""

    mode: Literal["streaming", "scheduled"]
    reason: str


class Audience(_AudienceFields):
    """An audience as the API returns it; fields of other kinds are null."""

    model_config = ConfigDict(extra="forbid")

    id: str
    kind: AudienceKind
    rule: str | None = Field(default=None, description="Canonical text of the rule.")
    rule_json: dict[str, Any] | None = Field(default=None, description="The rule's JSON form.")
    dependencies: list[str] = Field(
        default_factory=list, description="Keys of the audiences this rule reads (`in_audience`)."
    )
    dependents: list[str] = Field(
        default_factory=list, description="Keys of the audiences whose rules read this one."
    )
    evaluation_mode: EvaluationMode | None = Field(
        default=None, description="Dynamic audiences: streaming or scheduled, with the reason."
    )
    ttl_days: int | None = None
    source: SyncSource | None = Field(default=None, description="External audiences' source.")
    sync: SyncState | None = Field(
        default=None, description="External audiences: how their sync stands; null otherwise."
    )
    size: int | None = Field(default=None, description="Members as of `evaluation.computed_at`.")
    evaluation: EvaluationState
    writes: Literal["applied", "in_progress"] | None = Field(
        default=None,
        description="Static and pushed external audiences: `in_progress` while a write or "
        "import of members is queued or running, else `applied`; null for other kinds.",
    )
    version: int = Field(description="Increases on every change; the ETag is its quoted value.")
    created_at: datetime
    updated_at: datetime = Field(description="When the definition last changed.")
    members_changed_at: datetime = Field(
        description="When a member last entered or left (its creation until one does)."
    )
    created_by: str | None = None
    updated_by: str | None = None
    group: Relationship | None = Field(default=None, description="With `include=group` only.")


class BulkGet(InputModel):
    """Ids to fetch in one call."""

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


AUDIENCE_SORTS = ("name", "key", "created_at", "updated_at", "members_changed_at", "id")
AUDIENCE_INCLUDES = ("group",)


class AudienceListParams(ListParams):
    """Query parameters of the audience list: the common ones plus exact-match filters."""

    sort: str | None = Field(
        default=None,
        pattern=sort_pattern(AUDIENCE_SORTS),
        description="One of " + ", ".join(AUDIENCE_SORTS) + "; `-` for descending.",
    )
    fields: str | None = Field(default=None, pattern=names_pattern(Audience.model_fields))
    include: str | None = Field(default=None, pattern=names_pattern(AUDIENCE_INCLUDES))
    kind: Annotated[list[str] | None, ListFilter(enum_values(AudienceKind))] = Field(
        default=None, description="Of this kind. Several: repeat it or use commas."
    )
    lifecycle_state: Annotated[list[str] | None, ListFilter(enum_values(LifecycleState))] = Field(
        default=None, description="In this state. Several: repeat it or use commas."
    )
    archived: Annotated[list[str] | None, ListFilter(enum_values(["true", "false"]))] = Field(
        default=None, description="`true` or `false`. Several: repeat it or use commas."
    )
    group: Annotated[list[str] | None, ListFilter(ID_PATTERN)] = Field(
        default=None,
        description="In this group (an id); `none`: ungrouped. Several: repeat it or use commas.",
    )
    label: Annotated[list[str] | None, ListFilter(LABEL_PATTERN)] = Field(
        default=None, description="Carrying this label. Several: repeat it or use commas."
    )
    key: Annotated[list[str] | None, ListFilter(KEY_PATTERN)] = Field(
        default=None, description="With this key. Several: repeat it or use commas."
    )
    members_changed_since: Rfc3339 | None = Field(
        default=None,
        description=(
            "Audiences whose members changed at or after this time (RFC 3339); `updated_since` "
            "follows the definition only."
        ),
    )


AudienceListItem = sparse_model(Audience, "AudienceListItem")
"""A audience in a list: every field present unless ``fields=`` asks for fewer."""
