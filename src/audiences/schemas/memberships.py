"""Membership request and response bodies: writes by id, runs, members, changes, previews."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints, model_validator

from audiences.schemas.audiences import MAX_RULE_CHARS, EvaluationMode
from audiences.schemas.common import (
    JSON_INTEGER,
    RULE_WARNINGS,
    InputModel,
    ListFilter,
    ListParams,
    ProblemItem,
    enum_values,
    names_pattern,
    sort_pattern,
    sparse_model,
)
from audiences.schemas.imports import ImportMode

MAX_IDS = 10_000
"""Most ids one membership write carries."""
MAX_ID_LENGTH = 512
"""The longest external id (and event id) anywhere: in the API, in files, in every engine."""
ID_PATTERN = r"^[^\x00-\x1f]+$"
ExternalId = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN)
]


CONTROL = re.compile(r"[\x00-\x1f]")


def plain_ids(ids: list[Any]) -> bool:
    """Whether every item is an :data:`ExternalId` (a string of 1-512 characters, no control
    characters), checked in C-speed passes over the whole list: the bodies of member writes
    carry 10,000, and a model per id costs six times as much. ``join`` refuses non-strings.

    >>> plain_ids(["a", "b"]), plain_ids(["a", ""]), plain_ids(["a", 1]), plain_ids(["a\\nb"])
    (True, False, False, False)
    """
    if not ids:
        return True
    try:
        joined = "".join(ids)
    except TypeError:
        return False
    lengths = list(map(len, ids))
    return min(lengths) > 0 and max(lengths) <= MAX_ID_LENGTH and not CONTROL.search(joined)


class MemberChange(InputModel):
    """One id of a mixed write, with what to do to it."""

    id: ExternalId
    action: Literal["add", "remove"]


class MemberWrite(InputModel):
    """Ids to add to, remove from, or make the members of a static audience (``action`` and
    ``ids``); or ``changes``, each id with its own action (the last one for an id wins)."""

    action: ImportMode | None = None
    ids: list[ExternalId] | None = Field(default=None, max_length=MAX_IDS)
    changes: list[MemberChange] | None = Field(default=None, max_length=MAX_IDS)

    @model_validator(mode="after")
    def _one_form(self) -> MemberWrite:
        if self.changes is not None:
            if self.action is not None or self.ids is not None:
                raise ValueError("send either `changes`, or `action` and `ids`, not both")
        elif self.action is None or self.ids is None:
            raise ValueError("send `action` and `ids`, or `changes`")
        return self

    @property
    def size(self) -> int:
        """How many ids the write names."""
        return len(self.changes if self.changes is not None else self.ids or [])


_ID_SCHEMA = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_ID_LENGTH,
    "pattern": ID_PATTERN,
}
MEMBER_WRITE_SCHEMA: dict[str, Any] = {
    "title": "MemberWrite",
    "oneOf": [
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["action", "ids"],
            "properties": {
                "action": {"type": "string", "enum": [mode.value for mode in ImportMode]},
                "ids": {
                    "type": "array",
                    "maxItems": MAX_IDS,
                    "items": _ID_SCHEMA,
                    "description": "External ids (profiles are created when unknown).",
                },
            },
        },
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["changes"],
            "properties": {
                "changes": {
                    "type": "array",
                    "maxItems": MAX_IDS,
                    "description": "Each id with its own action; the last one for an id wins.",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["id", "action"],
                        "properties": {
                            "id": _ID_SCHEMA,
                            "action": {"type": "string", "enum": ["add", "remove"]},
                        },
                    },
                }
            },
        },
    ],
}
MEMBER_WRITE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": MEMBER_WRITE_SCHEMA}},
    }
}
"""The JSON body, declared by hand: the route parses it with orjson and checks a plain list of
ids in bulk, which costs a sixth of validating a model per id."""

RUN_SORTS = ("number", "started_at", "id")
RUN_STATUSES = ("running", "succeeded", "failed")


class Run(BaseModel):
    """One evaluation of an audience."""

    id: str
    audience_id: str
    number: int = Field(description="1 for the audience's first run, then counting up.")
    trigger: str = Field(description="`manual`, `scheduled`, `rule_change`, ...")
    status: Literal["running", "succeeded", "failed"]
    rule: str | None
    started_at: datetime
    finished_at: datetime | None
    size: int | None
    entered: int | None
    exited: int | None
    error: str | None
    members_kept: bool = Field(description="Whether the member set as of this run can be read.")


RunListItem = sparse_model(Run, "RunListItem")


class RunListParams(ListParams):
    """Query parameters of the run list."""

    sort: str | None = Field(
        default=None,
        pattern=sort_pattern(RUN_SORTS),
        description="`number` (default `-number`), `started_at` or `id`.",
    )
    fields: str | None = Field(default=None, pattern=names_pattern(Run.model_fields))
    include: str | None = Field(default=None, pattern="^$", description="Nothing to include.")
    status: Annotated[list[str] | None, ListFilter(enum_values(RUN_STATUSES))] = Field(
        default=None, description="In this status. Several: repeat it or use commas."
    )
    trigger: Annotated[list[str] | None, ListFilter(r"^[a-z_]{1,16}$")] = Field(
        default=None,
        description="Started this way (`manual`, …). Several: repeat it or use commas.",
    )


class Member(BaseModel):
    """A member, by external id."""

    id: str


class MemberPage(BaseModel):
    """A page of members in a stable order, as of ``computed_at``."""

    data: list[Member]
    has_more: bool
    next_cursor: str | None
    total: int
    computed_at: datetime | None


class Change(BaseModel):
    """A profile that entered or exited."""

    id: str
    change: Literal["entered", "exited"]


class ChangePage(BaseModel):
    """A page of the changes since a run (or of the latest run), and their totals."""

    data: list[Change]
    has_more: bool
    next_cursor: str | None
    entered: int
    exited: int
    computed_at: datetime | None
    since: str | None = Field(
        description="The run the changes start from (null: from no members, before any run)."
    )
    run_id: str | None = Field(
        description="The run the changes end at: the latest run when `since` is not given, "
        "null for the members now."
    )


class Membership(BaseModel):
    """Is this profile a member, as of when, and (on request) why by the rule now."""

    audience_id: str
    profile_id: str
    member: bool
    computed_at: datetime | None
    explanation: dict[str, Any] | None = None


class PreviewRequest(InputModel):
    """A rule to try: its text or its JSON form."""

    rule: str | dict[str, Any] = Field(
        description=f"Rule text (at most {MAX_RULE_CHARS:,} characters) or its JSON form."
    )
    sample: Annotated[int, Field(ge=0, le=100), JSON_INTEGER] = Field(
        default=10, description="How many members to list."
    )


class PreviewResult(BaseModel):
    """What a rule would select now; nothing stored. ``entering``/``exiting`` compare it with an
    existing audience's current members."""

    rule: str
    rule_json: dict[str, Any]
    size: int
    sample: list[str]
    evaluation_mode: EvaluationMode
    warnings: list[ProblemItem] = Field(default_factory=list, description=RULE_WARNINGS)
    entering: int | None = None
    exiting: int | None = None
    entering_sample: list[str] | None = None
    exiting_sample: list[str] | None = None
