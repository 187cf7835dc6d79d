"""Previews: what a rule would select now, and how it differs from an audience's members."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyroaring import AbstractBitMap
from sqlalchemy.orm import Session

from audiences import rules
from audiences.kit.clock import utcnow
from audiences.membership.bitmaps import page
from audiences.schemas.memberships import PreviewResult
from audiences.services import audiences, definitions, evaluation, memberships
from audiences.services.callers import Caller
from audiences.services.runtime import Runtime

PREVIEW_KEY = "preview"


def preview(
    session: Session,
    *,
    caller: Caller,
    runtime: Runtime,
    rule: str | Mapping[str, Any],
    sample: int,
    audience_id: str | None = None,
) -> PreviewResult:
    """Evaluate ``rule`` on the engine without storing anything.

    With ``audience_id``, the rule is checked as that audience's proposed rule (its key, its
    place in the graph) and compared with its current members.
    """
    audience = (
        None
        if audience_id is None
        else audiences.get(session, caller=caller, audience_id=audience_id)
    )
    key = PREVIEW_KEY if audience is None else audience.key
    bound = definitions.check(
        session,
        workspace_id=caller.workspace_id,
        rule=rule,
        key=key,
        audience_id=None if audience is None else audience.id,
        streaming=False,
    )
    members = evaluation.select_members(
        session, runtime=runtime, workspace_id=caller.workspace_id, rule=bound, now=utcnow()
    )
    nodes = [
        n
        for n in definitions.graph(session, caller.workspace_id)
        if audience is None or n.id != audience.id
    ]
    result = PreviewResult(
        rule=bound.text,
        rule_json=rules.to_json(bound),
        size=len(members),
        sample=_sample(runtime, caller.workspace_id, members, sample),
        evaluation_mode=definitions.mode_of(
            nodes, key=key, rule=bound, dependencies=rules.dependencies(bound)
        ),
    )
    if audience is not None:
        current = memberships.current(session, runtime=runtime, audience_id=audience.id)
        entering, exiting = members - current, current - members
        result.entering, result.exiting = len(entering), len(exiting)
        result.entering_sample = _sample(runtime, caller.workspace_id, entering, sample)
        result.exiting_sample = _sample(runtime, caller.workspace_id, exiting, sample)
    return result


def _sample(runtime: Runtime, workspace_id: str, members: AbstractBitMap, count: int) -> list[str]:
    pids = page(members, None, count) if count else []
    return [e for e in runtime.profiles.external_ids_for(workspace_id, pids) if e is not None]
