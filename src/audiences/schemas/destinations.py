"""Destination request and response bodies: webhooks and file directories (local or in a
bucket) that receive the membership changes of the audiences they subscribe to, and their
delivery log."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from audiences.schemas.common import (
    ID_PATTERN,
    InputModel,
    ListFilter,
    ListParams,
    Rfc3339,
    names_pattern,
    sort_pattern,
    sparse_model,
)

DestinationKind = Literal["webhook", "file"]
FileFormat = Literal["csv", "ndjson", "parquet"]
FileMode = Literal["full", "changes"]
AudienceRef = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
AttributeRef = Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_]*$", max_length=128)]
MAX_SUBSCRIBED = 100
MIN_FILE_INTERVAL = 60


def _once(values: list[str]) -> list[str]:
    """Each value once, in the order first given (a repeated id or attribute counts once)."""
    return list(dict.fromkeys(values))


class AudienceList(InputModel):
    """Follow these audiences."""

    audience_ids: Annotated[
        list[AudienceRef],
        Field(min_length=1, max_length=MAX_SUBSCRIBED),
        AfterValidator(_once),
    ]


class GroupAudiences(InputModel):
    """Follow the audiences of a group, now and later."""

    group_id: AudienceRef


class AllAudiences(InputModel):
    """Follow every audience of the workspace."""

    all: Literal[True]


Subscription = AudienceList | GroupAudiences | AllAudiences
"""Which audiences a destination follows: exactly one of the three forms."""


class DestinationWrite(InputModel):
    """The writable fields of a destination: the body of PUT, and what PATCH edits. A webhook
    takes ``url``; a file destination takes ``path``, ``format``, ``mode`` and
    ``interval_seconds`` (the service refuses the fields of the other kind,
    ``destination_fields_mismatch``)."""

    name: str = Field(min_length=1, max_length=200, description="Unique in the workspace.")
    description: str | None = Field(default=None, max_length=5000)
    kind: DestinationKind
    subscription: Subscription
    attributes: Annotated[list[AttributeRef], AfterValidator(_once)] = Field(
        default_factory=list,
        max_length=50,
        description="Profile attributes sent with each change (besides the external id); "
        "one named twice is sent once.",
    )
    enabled: bool = Field(
        default=True,
        description="Off: nothing is sent, changes wait. Turning it on again clears "
        "`disabled_reason` and sends what waited.",
    )
    url: str | None = Field(
        default=None, max_length=2048, description="Webhook: where messages are POSTed."
    )
    path: str | None = Field(
        default=None,
        max_length=500,
        description="File: a folder under the operator's `AUDIENCES_DESTINATION_FILE_ROOT`, "
        "or `s3://<bucket>/<prefix>` on the operator's S3-compatible service (a bucket listed "
        "in `AUDIENCES_DESTINATION_S3_BUCKETS`).",
    )
    format: FileFormat | None = Field(default=None, description="File: `csv` (default).")
    mode: FileMode | None = Field(
        default=None,
        description="File: `full` (default; each run writes every member) or `changes` (who "
        "entered and exited since the last file).",
    )
    interval_seconds: int | None = Field(
        default=None,
        ge=MIN_FILE_INTERVAL,
        le=366 * 86_400,
        description="File: how often files are written (default 3600).",
    )


class DestinationCreate(DestinationWrite):
    """The body of POST: the writable fields, and a webhook's first secret if the client
    brings one (else one is made)."""

    secret: str | None = Field(
        default=None,
        max_length=200,
        description="Webhook: `whsec_` and the base64 of 24 to 64 random bytes.",
    )


class Destination(DestinationWrite):
    """A destination as the API returns it. Secrets are shown once: in the answer of its
    creation and of ``rotate-secret``."""

    model_config = ConfigDict(extra="forbid")

    id: str
    disabled_reason: str | None = Field(
        default=None, description="Why it was turned off (a 410, failures past the schedule)."
    )
    disabled_at: datetime | None = None
    last_delivery_at: datetime | None = Field(
        default=None, description="When a message last reached it."
    )
    last_error: str | None = None
    backlog: int = Field(
        description="Messages not delivered yet plus recorded membership revisions not yet "
        "put in a message."
    )
    next_run_at: datetime | None = Field(default=None, description="File: the next write.")
    secret: str | None = Field(
        default=None, description="The signing secret: in the creation's answer only."
    )
    version: int
    created_at: datetime
    updated_at: datetime
    created_by: str | None = None
    updated_by: str | None = None


DESTINATION_SORTS = ("name", "created_at", "updated_at", "id")
FREE_TEXT = r"^[\s\S]{1,5000}$"


class DestinationListParams(ListParams):
    """Query parameters of the destination list: the common ones plus kind and enabled."""

    sort: str | None = Field(
        default=None,
        pattern=sort_pattern(DESTINATION_SORTS),
        description="One of " + ", ".join(DESTINATION_SORTS) + "; `-` for descending.",
    )
    fields: str | None = Field(default=None, pattern=names_pattern(Destination.model_fields))
    include: str | None = Field(default=None, pattern="^$", description="Nothing to include.")
    name: Annotated[list[str] | None, ListFilter(FREE_TEXT, commas=False)] = Field(
        default=None, description="Exactly this name. Several: repeat it."
    )
    kind: Annotated[list[str] | None, ListFilter(r"^(webhook|file)$")] = Field(
        default=None, description="`webhook` or `file`."
    )
    enabled: Annotated[list[str] | None, ListFilter(r"^(true|false)$")] = Field(
        default=None, description="`true` or `false`."
    )


DestinationListItem = sparse_model(Destination, "DestinationListItem")
"""A destination in a list: every field present unless ``fields=`` asks for fewer."""


class SecretRotated(BaseModel):
    """The answer of ``rotate-secret``: the new secret, and until when the old one still
    signs."""

    secret: str
    previous_expires_at: datetime | None


class DeliveryAttempt(BaseModel):
    """One attempt of a delivery."""

    attempted_at: datetime
    status: int | None = Field(description="The receiver's HTTP status; null without answer.")
    response_ms: int
    error: str | None = None
    response: str | None = Field(default=None, description="The start of the answer's body.")


class Delivery(BaseModel):
    """One message to a destination (``id`` is its ``webhook-id``) and how its delivery went."""

    id: str
    type: str
    status: Literal["pending", "sending", "delivered", "failed"] = Field(
        description="`pending` (waiting for an attempt), `sending` (a test message in flight), "
        "`delivered` or `failed`."
    )
    changes: int
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    last_status: int | None
    last_error: str | None
    last_response_ms: int | None
    attempt_log: list[DeliveryAttempt] | None = Field(
        default=None, description="With `GET …/deliveries/{id}` only: every attempt."
    )
    payload: dict[str, Any] | None = Field(
        default=None, description="With `GET …/deliveries/{id}` only: the body sent."
    )


DELIVERY_SORTS = ("seq", "created_at", "id")


class DeliveryListParams(ListParams):
    """Query parameters of the delivery log (newest first by default) and its status filter."""

    sort: str | None = Field(
        default=None,
        pattern=sort_pattern(DELIVERY_SORTS),
        description="One of " + ", ".join(DELIVERY_SORTS) + "; `-` for descending.",
    )
    fields: str | None = Field(default=None, pattern=names_pattern(Delivery.model_fields))
    include: str | None = Field(default=None, pattern="^$", description="Nothing to include.")
    status: Annotated[list[str] | None, ListFilter(r"^(pending|sending|delivered|failed)$")] = (
        Field(default=None, description="`pending`, `sending`, `delivered` or `failed`.")
    )


class Redeliver(InputModel):
    """What to send again: every message created at or after ``since``."""

    since: Rfc3339


class Redelivered(BaseModel):
    """How many messages were put back in line."""

    redelivered: int


class TestResult(BaseModel):
    """The outcome of a test message (sent at once, not retried)."""

    delivered: bool
    delivery: Delivery
