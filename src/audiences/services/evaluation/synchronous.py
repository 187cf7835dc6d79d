"""Synchronous evaluation: which audiences one profile (stored or not) would be in, and why,
storing nothing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from audiences import rules
from audiences.kit.clock import utcnow
from audiences.schemas.events import Event
from audiences.services import (
    memberships,
)
from audiences.services.evaluation.compiled import (
    at,
    bound_rule,
    compiled_rules,
    hook,
    view,
    workspace_schema,
)
from audiences.services.runtime import Runtime
from audiences.store.tables import AudienceRow


@dataclass(frozen=True)
class Verdict:
    """One audience's answer for one profile, with the explanation when asked for."""

    audience: AudienceRow
    member: bool
    explanation: dict[str, Any] | None


def evaluate_profile(
    session: Session,
    *,
    runtime: Runtime,
    workspace_id: str,
    attributes_: Mapping[str, Any],
    pid: int | None,
    explain: bool,
    now: datetime | None = None,
    events: Sequence[Event] = (),
) -> list[Verdict]:
    """Which audiences a profile would be in now, storing nothing.

    Dynamic audiences are evaluated on the given attributes in dependency order; static and
    external ones answer from their stored membership (a profile not stored is in none).
    Rules over events read the stored profile's events (``pid``) with ``events`` added.
    """
    moment = now or utcnow()
    schema = workspace_schema(session, workspace_id)
    history = (
        runtime.profiles.events_of(workspace_id, [pid]).get(pid, []) if pid is not None else []
    )
    if history or events:
        merged = sorted([*history, *events], key=lambda event: event.timestamp)
        attributes_ = {**attributes_, rules.EVENTS_KEY: merged}
    every = list(
        session.scalars(select(AudienceRow).where(AudienceRow.workspace_id == workspace_id))
    )
    stored = memberships.many(session, runtime=runtime, audience_ids=[a.id for a in every])
    answers: dict[str, bool] = {
        a.key: pid is not None and pid in stored[a.id] for a in every if a.kind != "dynamic"
    }
    dynamic = {a.key: a for a in every if a.kind == "dynamic" and a.rule}
    graph = {key: [k for k in a.dependencies if k in dynamic] for key, a in dynamic.items()}
    verdicts = [Verdict(a, answers[a.key], None) for a in every if a.kind != "dynamic"]
    profile = view(attributes_, pid, lambda key, _pid: answers.get(key))
    order = rules.evaluation_order(graph)
    members = compiled_rules(tuple((key, dynamic[key].rule or "") for key in order), schema)
    with at(moment):
        answers.update(zip(order, members.answers(profile), strict=True))
    for key in order:
        audience = dynamic[key]
        detail = None
        if explain:
            rule = bound_rule(audience.rule or "", schema)
            detail = rules.explain(rule, profile, audience=hook, now=moment)
        verdicts.append(Verdict(audience, answers[key], detail))
    return verdicts


def explain_member(
    session: Session,
    *,
    runtime: Runtime,
    audience: AudienceRow,
    attributes_: Mapping[str, Any],
    pid: int | None,
) -> dict[str, Any] | None:
    """Why a profile is (not) in a dynamic audience by its rule now; None for other kinds."""
    if audience.kind != "dynamic" or not audience.rule:
        return None
    for verdict in evaluate_profile(
        session,
        runtime=runtime,
        workspace_id=audience.workspace_id,
        attributes_=attributes_,
        pid=pid,
        explain=True,
    ):
        if verdict.audience.id == audience.id:
            return verdict.explanation
    return None
