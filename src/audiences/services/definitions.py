"""Rules as part of audience definitions: binding on write, the dependency graph, evaluation modes.

A dynamic audience's rule is validated against the workspace's attribute schema when written,
stored as canonical text with its JSON form and the keys it depends on, and refused when it
names an unknown audience, closes a cycle, or asks for streaming while it cannot stream.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from audiences import rules
from audiences.errors import ErrorDetail, RuleError
from audiences.schemas.audiences import (
    AudienceWrite,
    DynamicAudienceWrite,
    EvaluationMode,
    RefreshMode,
)
from audiences.services import attributes, event_properties
from audiences.store.tables import AudienceRow

RULE_LOCATION = ("body", "rule")


@dataclass(frozen=True)
class Binding:
    """What a dynamic audience stores of its rule."""

    text: str
    json: dict[str, Any]
    dependencies: list[str]


@dataclass(frozen=True)
class Node:
    """One audience in the dependency graph of a workspace."""

    id: str
    key: str
    kind: str
    rule: str | None
    refresh_mode: str
    dependencies: tuple[str, ...]
    lifecycle_state: str = "draft"
    archived: bool = False


def bind(
    session: Session, *, workspace_id: str, data: AudienceWrite, audience_id: str | None
) -> Binding | None:
    """Validate a write's rule against the schema and the graph; None for other kinds."""
    if not isinstance(data, DynamicAudienceWrite):
        return None
    rule = check(
        session,
        workspace_id=workspace_id,
        rule=data.rule,
        key=data.key,
        audience_id=audience_id,
        streaming=data.refresh_policy.mode is RefreshMode.STREAMING,
    )
    return Binding(
        text=rule.text, json=rules.to_json(rule), dependencies=sorted(rules.dependencies(rule))
    )


def check(
    session: Session,
    *,
    workspace_id: str,
    rule: str | Mapping[str, Any],
    key: str,
    audience_id: str | None,
    streaming: bool,
) -> rules.Rule:
    """A rule (text or JSON form) validated for audience ``key``: against the attribute schema,
    the audiences it names, cycles, and, when ``streaming``, whether it can stream."""
    schema = attributes.schema(session, workspace_id=workspace_id)
    events = event_properties.event_schema(session, workspace_id=workspace_id)
    try:
        bound = rules.validate_rule(rule, schema, events=events)
    except RuleError as exc:
        raise _located(exc) from None
    depends = sorted(rules.dependencies(bound))
    nodes = {n.key: n for n in graph(session, workspace_id) if n.id != audience_id}
    _check_dependencies(key, depends, nodes)
    if streaming:
        verdict = mode_of(nodes.values(), key=key, rule=bound, dependencies=depends)
        if verdict.mode != "streaming":
            message = f"this rule cannot be evaluated as profiles change: {verdict.reason}"
            raise RuleError(
                message,
                code="rule_not_streamable",
                errors=[ErrorDetail("rule_not_streamable", message, RULE_LOCATION)],
            )
    return bound


def mode_of(
    nodes: Iterable[Node], *, key: str, rule: rules.Rule, dependencies: Iterable[str]
) -> EvaluationMode:
    """The evaluation mode a rule would have as audience ``key`` with a streaming policy."""
    candidate = Node("", key, "dynamic", rule.text, "streaming", tuple(dependencies))
    return modes([n for n in nodes if n.key != key], extra=candidate)[key]


def graph(session: Session, workspace_id: str) -> list[Node]:
    """Every audience of the workspace as a node of the dependency graph."""
    stmt = select(
        AudienceRow.id,
        AudienceRow.key,
        AudienceRow.kind,
        AudienceRow.rule,
        AudienceRow.refresh_mode,
        AudienceRow.dependencies,
        AudienceRow.lifecycle_state,
        AudienceRow.archived,
    ).where(AudienceRow.workspace_id == workspace_id)
    return [
        Node(
            row.id,
            row.key,
            row.kind,
            row.rule,
            row.refresh_mode,
            tuple(row.dependencies or ()),
            row.lifecycle_state,
            row.archived,
        )
        for row in session.execute(stmt)
    ]


def dependents(nodes: Iterable[Node]) -> dict[str, list[str]]:
    """For each audience key, the keys of the audiences whose rules read it."""
    found: dict[str, list[str]] = {}
    for node in sorted(nodes, key=lambda n: n.key):
        for key in node.dependencies:
            found.setdefault(key, []).append(node.key)
    return found


def modes(nodes: Iterable[Node], *, extra: Node | None = None) -> dict[str, EvaluationMode]:
    """The evaluation mode of every dynamic audience, in dependency order.

    Static audiences count as streaming (their members change only by writes we see); a
    dynamic one does when its rule can stream and its refresh policy asks for streaming.
    """
    every = {n.key: n for n in [*nodes, *([extra] if extra else [])]}
    dynamic = {key: n for key, n in every.items() if n.kind == "dynamic" and n.rule}
    order = rules.evaluation_order(
        {k: [d for d in n.dependencies if d in dynamic] for k, n in dynamic.items()}
    )
    streaming = {key for key, n in every.items() if n.kind == "static"}
    found: dict[str, EvaluationMode] = {}
    for key in order:
        node = dynamic[key]
        mode, reason = rules.evaluation_mode(_parsed(node.rule or ""), streaming)
        found[key] = EvaluationMode(mode=mode, reason=reason)
        if mode == "streaming" and node.refresh_mode == "streaming":
            streaming.add(key)
    return found


def _check_dependencies(key: str, depends: list[str], nodes: Mapping[str, Node]) -> None:
    unknown = [d for d in depends if d not in nodes and d != key]
    if unknown:
        message = "no audience with key " + ", ".join(repr(k) for k in unknown)
        raise RuleError(
            message, errors=[ErrorDetail("rule_unknown_audience", message, RULE_LOCATION)]
        )
    edges = {k: list(n.dependencies) for k, n in nodes.items()}
    edges[key] = depends
    cycle = rules.find_cycle(edges)
    if cycle is not None:
        message = "audiences would depend on each other in a cycle: " + " -> ".join(cycle)
        raise RuleError(
            message,
            errors=[ErrorDetail("rule_cycle", message, RULE_LOCATION)],
            extra={"cycle": cycle},
        )


def _located(exc: RuleError) -> RuleError:
    located = [
        ErrorDetail(
            code=item.code,
            message=item.message,
            location=RULE_LOCATION + item.location,
            start=item.start,
            end=item.end,
            line=item.line,
            col=item.col,
            suggestion=item.suggestion,
        )
        for item in exc.errors
    ]
    return RuleError(exc.detail, errors=located)


@lru_cache(maxsize=4096)
def _parsed(text: str) -> rules.Rule:
    return rules.parse_rule(text)
