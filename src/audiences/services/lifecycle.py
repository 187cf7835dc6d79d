"""What an audience's lifecycle allows: the one place that answers "may this audience be
evaluated, or its members written, now".

An audience is *live* while it is not archived and its ``lifecycle_state`` is ``draft`` or
``published``; it is *parked* while it is ``inactive`` or ``archived``. A parked audience keeps
its last members, readable as before (and by other audiences' ``in_audience``), but nothing
changes them: no scheduled refresh, no streaming, no evaluation after a rule change, no ttl
expiry, and a manual refresh or a static write answers 409 with a stable code. Drafts are
evaluated like published audiences: every audience starts as a draft, and seeing its members
before publishing it is the point of a draft. The table in ``docs/api.md`` says the same.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy import and_

from audiences.errors import Conflict
from audiences.schemas.audiences import LifecycleState
from audiences.store.tables import AudienceRow


class Action(StrEnum):
    """What may be done to an audience, as far as its lifecycle is concerned."""

    AUTOMATIC = "automatic"
    """Evaluation nobody asked for in the request: scheduled refresh, streaming, the run queued
    after a rule change, ttl expiry."""
    REFRESH = "refresh"
    """``POST /v1/audiences/{id}/refresh``."""
    WRITE = "write"
    """A static audience's member writes and imports."""
    READ = "read"
    """Members, changes, export, runs, is-member, ``in_audience`` by other rules, previews."""


class HasLifecycle(Protocol):
    """Anything that carries an audience's lifecycle (a row, a graph node)."""

    @property
    def lifecycle_state(self) -> str: ...

    @property
    def archived(self) -> bool: ...


def parked(audience: HasLifecycle) -> bool:
    """Whether the audience is inactive or archived: its members stay as they are."""
    return bool(audience.archived) or audience.lifecycle_state == LifecycleState.INACTIVE.value


def allows(audience: HasLifecycle, action: Action) -> bool:
    """Whether ``action`` may be done to the audience in its lifecycle state now."""
    return action is Action.READ or not parked(audience)


def require(audience: HasLifecycle, action: Action) -> None:
    """Refuse ``action`` with 409 when the audience's lifecycle does not allow it:
    ``audience_archived`` for an archived audience, else ``audience_inactive``."""
    if allows(audience, action):
        return
    what = "evaluated" if action in (Action.AUTOMATIC, Action.REFRESH) else "written to"
    extra = {"lifecycle_state": audience.lifecycle_state, "archived": bool(audience.archived)}
    if audience.archived:
        raise Conflict(
            f"an archived audience is not {what}; unarchive it first (archived: false)",
            code="audience_archived",
            extra=extra,
        )
    raise Conflict(
        f"an inactive audience is not {what}; set lifecycle_state to draft or published first",
        code="audience_inactive",
        extra=extra,
    )


def live() -> Any:
    """The SQL condition on :class:`AudienceRow` that :func:`parked` is not: the audiences
    automatic evaluation may touch."""
    return and_(
        AudienceRow.archived.is_(False),
        AudienceRow.lifecycle_state != LifecycleState.INACTIVE.value,
    )
