"""Audiences: create, read, list, replace, patch, delete, bulk-get."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, lazyload
from sqlalchemy.orm.exc import StaleDataError

from audiences import queue
from audiences.errors import Conflict, ErrorDetail, NotFound, ValidationFailed
from audiences.kit.clock import utcnow
from audiences.schemas.audiences import (
    AUDIENCE_WRITE,
    WRITABLE_FIELDS,
    Audience,
    AudienceWrite,
    EvaluationMode,
    EvaluationState,
    ExternalAudienceWrite,
    RefreshMode,
    ScheduledRefresh,
    StaticAudienceWrite,
)
from audiences.schemas.common import ListQuery, PageResult, ProblemItem, Relationship
from audiences.schemas.jobs import JobKind, JobState
from audiences.schemas.syncs import SyncState
from audiences.services import (
    definitions,
    freshness,
    lifecycle,
    memberships,
    sync_sources,
    syncs,
    versions,
)
from audiences.services.callers import Caller
from audiences.services.patching import Patch, apply_patch
from audiences.services.sync_rules import SourceRules
from audiences.services.validation import validation_failed
from audiences.store.repositories.audiences import AudienceRepository
from audiences.store.repositories.groups import GroupRepository
from audiences.store.tables import AudienceLabelRow, AudienceRow, JobRow, MembershipRow

EVALUATE = "evaluation.run"
"""The job that evaluates one audience (registered in ``audiences.jobs.handlers``)."""


def create(
    session: Session,
    *,
    caller: Caller,
    data: AudienceWrite,
    min_interval: int = 60,
    sources: SourceRules = SourceRules(),
) -> AudienceRow:
    """A new audience in the caller's workspace; :class:`Conflict` if its key is taken.

    A dynamic audience gets its first evaluation queued at once (trigger ``rule_change``), and
    an external one with a file or SQL source its first sync (trigger ``source_change``),
    unless it is created inactive or archived. ``sources`` says what a source may name.
    """
    repo = AudienceRepository(session, caller.workspace_id)
    _check_interval(data, min_interval)
    _check_source(data, sources.for_workspace(caller.workspace_id))
    _check_references(session, caller, data)
    _check_key_free(repo, data.key)
    binding = definitions.bind(
        session, workspace_id=caller.workspace_id, data=data, audience_id=None
    )
    row = AudienceRow(created_by=caller.actor, updated_by=caller.actor)
    _assign(row, data, binding)
    try:
        repo.add(row)
    except IntegrityError as exc:
        raise _duplicate(data.key) from exc
    if binding is not None and lifecycle.allows(row, lifecycle.Action.AUTOMATIC):
        _queue_evaluation(session, caller, row, trigger="rule_change")
    _queue_sync(session, caller, row, trigger="source_change")
    return row


def get(session: Session, *, caller: Caller, audience_id: str, labels: bool = True) -> AudienceRow:
    """One audience of the caller's workspace; :class:`NotFound` for any other id. Without
    ``labels`` its labels load only if touched (one query less for reads that never show them)."""
    options = () if labels else (lazyload(AudienceRow.label_rows),)
    row = AudienceRepository(session, caller.workspace_id).get(audience_id, *options)
    if row is None:
        raise NotFound(f"no audience {audience_id!r}", code="audience_not_found")
    return row


def get_many(session: Session, *, caller: Caller, ids: list[str]) -> dict[str, AudienceRow]:
    """The audiences among ``ids`` that exist in the caller's workspace."""
    return AudienceRepository(session, caller.workspace_id).get_many(ids)


def list_(session: Session, *, caller: Caller, query: ListQuery) -> PageResult[AudienceRow]:
    """A page of the workspace's audiences under the list conventions."""
    return AudienceRepository(session, caller.workspace_id).page(query)


def replace(
    session: Session,
    *,
    caller: Caller,
    audience_id: str,
    data: AudienceWrite,
    expected_version: Collection[int] | None,
    min_interval: int = 60,
    sources: SourceRules = SourceRules(),
) -> AudienceRow:
    """Replace every writable field (PUT); :class:`PreconditionFailed` on a stale version.

    A changed rule queues a re-evaluation (trigger ``rule_change``), and so does making an
    inactive or archived dynamic audience live again (trigger ``reactivated``): it missed the
    changes made while it was parked. A parked audience is not evaluated. A changed file or
    SQL source queues a sync the same way (``source_change``, ``reactivated``).
    """
    row = get(session, caller=caller, audience_id=audience_id)
    versions.check(row.version, expected_version)
    repo = AudienceRepository(session, caller.workspace_id)
    _check_interval(data, min_interval)
    _check_source(data, sources.for_workspace(caller.workspace_id))
    _check_references(session, caller, data)
    binding = definitions.bind(
        session, workspace_id=caller.workspace_id, data=data, audience_id=row.id
    )
    if binding is not None:
        data = data.model_copy(update={"rule": binding.text})
    if data == writable_view(row):
        return row
    if data.key != row.key:
        _check_key_free(repo, data.key)
        _check_no_dependents(session, row, "change the key of")
    rule_before, source_before, was_parked = row.rule, row.source, lifecycle.parked(row)
    _assign(row, data, binding)
    row.updated_at = utcnow()
    row.updated_by = caller.actor
    try:
        session.flush()
    except StaleDataError as exc:
        raise versions.stale() from exc
    except IntegrityError as exc:
        raise _duplicate(data.key) from exc
    if binding is not None and lifecycle.allows(row, lifecycle.Action.AUTOMATIC):
        if row.rule != rule_before:
            _queue_evaluation(session, caller, row, trigger="rule_change")
        elif was_parked:
            _queue_evaluation(session, caller, row, trigger="reactivated")
    if row.source != source_before:
        _queue_sync(session, caller, row, trigger="source_change")
    elif was_parked:
        _queue_sync(session, caller, row, trigger="reactivated")
    return row


def patch(
    session: Session,
    *,
    caller: Caller,
    audience_id: str,
    patch: Patch,
    expected_version: Collection[int] | None,
    min_interval: int = 60,
    sources: SourceRules = SourceRules(),
) -> AudienceRow:
    """Apply a JSON Patch or merge patch to the writable fields, then replace."""
    row = get(session, caller=caller, audience_id=audience_id)
    versions.check(row.version, expected_version)
    # The document a patch edits: read-only fields (for `test`) and this kind's writable ones.
    ctx = context(session, workspace_id=caller.workspace_id, rows=[row])
    current = {
        **to_model(row, ctx).model_dump(mode="json", exclude=set(WRITABLE_FIELDS) | {"group"}),
        **writable_view(row).model_dump(mode="json"),
    }
    patched = apply_patch(current, patch, WRITABLE_FIELDS)
    try:
        data = AUDIENCE_WRITE.validate_python(patched)
    except ValidationError as exc:
        raise validation_failed(exc, prefix=("body",)) from exc
    return replace(
        session,
        caller=caller,
        audience_id=audience_id,
        data=data,
        expected_version=None,
        min_interval=min_interval,
        sources=sources,
    )


def delete(
    session: Session, *, caller: Caller, audience_id: str, expected_version: Collection[int] | None
) -> None:
    """Delete an audience."""
    row = get(session, caller=caller, audience_id=audience_id)
    versions.check(row.version, expected_version)
    _check_no_dependents(session, row, "delete")
    try:
        AudienceRepository(session, caller.workspace_id).delete(row)
    except StaleDataError as exc:
        raise versions.stale() from exc


def writable_view(row: AudienceRow) -> AudienceWrite:
    """The writable fields of a stored audience, as a write body would carry them."""
    fields: dict[str, Any] = {
        "key": row.key,
        "name": row.name,
        "description": row.description,
        "kind": row.kind,
        "group_id": row.group_id,
        "labels": row.labels,
        "metadata": row.extra_metadata,
        "lifecycle_state": row.lifecycle_state,
        "archived": row.archived,
        "refresh_policy": {"mode": row.refresh_mode},
    }
    if row.refresh_interval_seconds is not None:
        fields["refresh_policy"]["interval_seconds"] = row.refresh_interval_seconds
    kind_fields: dict[str, dict[str, Any]] = {
        "static": {"ttl_days": row.ttl_days},
        "dynamic": {"rule": row.rule},
    }
    fields.update(kind_fields.get(row.kind, {"source": row.source or {"type": "push"}}))
    return AUDIENCE_WRITE.validate_python(fields)


@dataclass(frozen=True)
class Context:
    """What rendering audiences needs beyond their rows: state, dependents, evaluation modes,
    and which static audiences have writes in progress."""

    states: dict[str, MembershipRow]
    dependents: dict[str, list[str]]
    modes: dict[str, EvaluationMode]
    freshness: dict[str, freshness.Freshness]
    writing: frozenset[str] = frozenset()
    syncs: dict[str, SyncState] | None = None
    warnings: dict[str, list[ProblemItem]] = field(default_factory=dict)


def context(session: Session, *, workspace_id: str, rows: list[AudienceRow]) -> Context:
    """The rendering context for these audiences of one workspace."""
    nodes = definitions.graph(session, workspace_id)
    states = memberships.states(session, [row.id for row in rows])
    writing = _writing(session, workspace_id, [row.id for row in rows if syncs.pushed(row)])
    return Context(
        states=states,
        dependents=definitions.dependents(nodes),
        modes=definitions.modes(nodes),
        freshness=freshness.of(session, rows),
        writing=writing,
        syncs=syncs.states(session, rows, writing=writing, members=states),
        warnings=definitions.warnings(
            session,
            workspace_id=workspace_id,
            texts={row.id: row.rule for row in rows if row.kind == "dynamic" and row.rule},
        ),
    )


def _writing(session: Session, workspace_id: str, audience_ids: list[str]) -> frozenset[str]:
    """The audiences among these with a member write or import (an ``import`` job) queued or
    running."""
    if not audience_ids:
        return frozenset()
    stmt = (
        select(JobRow.subject_id)
        .where(
            JobRow.workspace_id == workspace_id,
            JobRow.subject_id.in_(audience_ids),
            JobRow.kind == JobKind.IMPORT.value,
            JobRow.state.in_((JobState.QUEUED.value, JobState.RUNNING.value)),
        )
        .distinct()
    )
    return frozenset(str(subject) for subject in session.scalars(stmt))


def to_model(row: AudienceRow, ctx: Context, *, group: Relationship | None = None) -> Audience:
    """The public shape of an audience."""
    state = ctx.states.get(row.id)
    fresh = ctx.freshness[row.id]
    return Audience(
        **writable_view(row).model_dump(exclude={"kind"}),
        kind=row.kind,
        rule_json=row.rule_json,
        dependencies=list(row.dependencies or []),
        dependents=ctx.dependents.get(row.key, []),
        evaluation_mode=ctx.modes.get(row.key),
        warnings=ctx.warnings.get(row.id, []),
        id=row.id,
        size=None if state is None else state.size,
        evaluation=EvaluationState(
            status=None if state is None else state.status,
            computed_at=None if state is None else state.computed_at,
            last_error=None if state is None else state.last_error,
            last_run_id=None if state is None else state.last_run_id,
            last_refreshed_at=fresh.last_refreshed_at,
            next_refresh_at=fresh.next_refresh_at,
            consecutive_failures=fresh.consecutive_failures,
        ),
        writes=_writes_state(row.id in ctx.writing) if syncs.pushed(row) else None,
        sync=None if ctx.syncs is None else ctx.syncs.get(row.id),
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
        members_changed_at=(
            row.created_at
            if state is None or state.members_changed_at is None
            else state.members_changed_at
        ),
        created_by=row.created_by,
        updated_by=row.updated_by,
        group=group,
    )


def _writes_state(in_progress: bool) -> Literal["applied", "in_progress"]:
    return "in_progress" if in_progress else "applied"


def _assign(row: AudienceRow, data: AudienceWrite, binding: definitions.Binding | None) -> None:
    row.key = data.key
    row.name = data.name
    row.description = data.description
    row.kind = data.kind.value
    row.group_id = data.group_id
    row.extra_metadata = data.metadata
    row.lifecycle_state = data.lifecycle_state.value
    row.archived = data.archived
    row.refresh_mode = data.refresh_policy.mode.value
    policy = data.refresh_policy
    row.refresh_interval_seconds = (
        policy.interval_seconds if isinstance(policy, ScheduledRefresh) else None
    )
    row.rule = None if binding is None else binding.text
    row.rule_json = None if binding is None else binding.json
    row.dependencies = [] if binding is None else binding.dependencies
    row.ttl_days = data.ttl_days if isinstance(data, StaticAudienceWrite) else None
    source = data.source if isinstance(data, ExternalAudienceWrite) else None
    row.source = None if source is None else source.model_dump(mode="json", exclude_none=True)
    _assign_labels(row, data.labels)


def _assign_labels(row: AudienceRow, labels: list[str]) -> None:
    # Reuse rows for labels that stay: a fresh row with the same primary key would be inserted
    # before the old one is deleted, and collide.
    existing = {label_row.label: label_row for label_row in row.label_rows}
    new_rows: list[AudienceLabelRow] = []
    for position, label in enumerate(labels):
        label_row = existing.get(label) or AudienceLabelRow(label=label)
        label_row.position = position
        new_rows.append(label_row)
    row.label_rows = new_rows


def _check_interval(data: AudienceWrite, minimum: int) -> None:
    policy = data.refresh_policy
    if isinstance(policy, ScheduledRefresh) and policy.interval_seconds < minimum:
        raise ValidationFailed(
            f"a scheduled refresh runs at most every {minimum} seconds on this server",
            code="refresh_interval_too_short",
            errors=[
                ErrorDetail(
                    "refresh_interval_too_short",
                    f"at least {minimum}",
                    ("body", "refresh_policy", "interval_seconds"),
                )
            ],
        )


def _check_source(data: AudienceWrite, rules: SourceRules) -> None:
    """Refuse a source the deployment does not allow, and a streaming refresh policy for a
    file or SQL source: those are synced on a schedule or when asked."""
    if not isinstance(data, ExternalAudienceWrite):
        return
    sync_sources.check(data.source, rules)
    pulled = data.source.type != "push"
    if pulled and data.refresh_policy.mode is RefreshMode.STREAMING:
        raise ValidationFailed(
            "a file or SQL source is synced on a schedule or when asked, not streamed",
            code="sync_not_streamable",
            errors=[
                ErrorDetail(
                    "sync_not_streamable",
                    "use manual or scheduled",
                    ("body", "refresh_policy", "mode"),
                )
            ],
        )


def _queue_sync(session: Session, caller: Caller, row: AudienceRow, *, trigger: str) -> None:
    if syncs.pulled(row) is not None and lifecycle.allows(row, lifecycle.Action.AUTOMATIC):
        syncs.queue_sync(session, row, trigger=trigger, created_by=caller.actor)


def _queue_evaluation(session: Session, caller: Caller, row: AudienceRow, *, trigger: str) -> None:
    if queue.active_for_subject(
        session, workspace_id=row.workspace_id, subject_id=row.id, handler=EVALUATE
    ):
        return
    queue.enqueue(
        session,
        workspace_id=row.workspace_id,
        kind=JobKind.EVALUATION,
        handler=EVALUATE,
        payload={"audience_id": row.id, "trigger": trigger},
        subject_id=row.id,
        created_by=caller.actor,
    )


def _check_no_dependents(session: Session, row: AudienceRow, action: str) -> None:
    readers = definitions.dependents(definitions.graph(session, row.workspace_id)).get(row.key)
    if readers:
        raise Conflict(
            f"cannot {action} audience {row.key!r}: the rules of {', '.join(readers)} read it",
            code="has_dependents",
            extra={"dependents": readers},
        )


def _check_references(session: Session, caller: Caller, data: AudienceWrite) -> None:
    if data.group_id is None:
        return
    if GroupRepository(session, caller.workspace_id).get(data.group_id) is None:
        raise ValidationFailed(
            f"no audience group {data.group_id!r} in this workspace",
            code="unknown_group",
            errors=[ErrorDetail("unknown_group", "no such group", ("body", "group_id"))],
        )


def _check_key_free(repo: AudienceRepository, key: str) -> None:
    if repo.by_key(key) is not None:
        raise _duplicate(key)


def _duplicate(key: str) -> Conflict:
    return Conflict(f"an audience with key {key!r} already exists", code="duplicate_key")


def relationships_by_group(
    session: Session, *, caller: Caller, group_ids: list[str]
) -> dict[str, list[Relationship]]:
    """The slim shape of the audiences in each of these groups (for ``include=audiences``)."""
    grouped: dict[str, list[Relationship]] = {gid: [] for gid in group_ids}
    for row in AudienceRepository(session, caller.workspace_id).in_groups(group_ids):
        assert row.group_id is not None
        grouped[row.group_id].append(Relationship(id=row.id, key=row.key, name=row.name))
    return grouped
