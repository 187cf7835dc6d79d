"""Audience groups: create, read, list, replace, patch, delete (refused while not empty)."""

from __future__ import annotations

from collections.abc import Collection

from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from audiences.errors import Conflict, NotFound
from audiences.kit.clock import utcnow
from audiences.schemas.common import ListQuery, PageResult, Relationship
from audiences.schemas.groups import Group, GroupWrite
from audiences.services import versions
from audiences.services.callers import Caller
from audiences.services.patching import Patch, apply_patch
from audiences.services.validation import validation_failed
from audiences.store.repositories.audiences import AudienceRepository
from audiences.store.repositories.groups import GroupRepository
from audiences.store.tables import AudienceGroupRow

WRITABLE = frozenset(GroupWrite.model_fields)


def create(session: Session, *, caller: Caller, data: GroupWrite) -> AudienceGroupRow:
    """A new group; :class:`Conflict` if the name is taken in the workspace."""
    row = AudienceGroupRow(
        name=data.name,
        description=data.description,
        created_by=caller.actor,
        updated_by=caller.actor,
    )
    try:
        return GroupRepository(session, caller.workspace_id).add(row)
    except IntegrityError as exc:
        raise _duplicate(data.name) from exc


def get(session: Session, *, caller: Caller, group_id: str) -> AudienceGroupRow:
    """One group of the caller's workspace; :class:`NotFound` for any other id."""
    row = GroupRepository(session, caller.workspace_id).get(group_id)
    if row is None:
        raise NotFound(f"no audience group {group_id!r}", code="group_not_found")
    return row


def list_(session: Session, *, caller: Caller, query: ListQuery) -> PageResult[AudienceGroupRow]:
    """A page of the workspace's groups under the list conventions."""
    return GroupRepository(session, caller.workspace_id).page(query)


def replace(
    session: Session,
    *,
    caller: Caller,
    group_id: str,
    data: GroupWrite,
    expected_version: Collection[int] | None,
) -> AudienceGroupRow:
    """Replace the writable fields (PUT)."""
    row = get(session, caller=caller, group_id=group_id)
    versions.check(row.version, expected_version)
    if data == writable_view(row):
        return row
    row.name = data.name
    row.description = data.description
    row.updated_at = utcnow()
    row.updated_by = caller.actor
    try:
        session.flush()
    except StaleDataError as exc:
        raise versions.stale() from exc
    except IntegrityError as exc:
        raise _duplicate(data.name) from exc
    return row


def patch(
    session: Session,
    *,
    caller: Caller,
    group_id: str,
    patch: Patch,
    expected_version: Collection[int] | None,
) -> AudienceGroupRow:
    """Apply a JSON Patch or merge patch to the writable fields, then replace."""
    row = get(session, caller=caller, group_id=group_id)
    versions.check(row.version, expected_version)
    counts = AudienceRepository(session, caller.workspace_id).count_by_group([row.id])
    current = to_model(row, audience_count=counts[row.id]).model_dump(mode="json")
    try:
        data = GroupWrite.model_validate(apply_patch(current, patch, WRITABLE))
    except ValidationError as exc:
        raise validation_failed(exc, prefix=("body",)) from exc
    return replace(session, caller=caller, group_id=group_id, data=data, expected_version=None)


def delete(
    session: Session,
    *,
    caller: Caller,
    group_id: str,
    expected_version: Collection[int] | None,
    detach: bool = False,
) -> None:
    """Delete a group; refused while it holds audiences unless ``detach`` ungroups them first."""
    row = get(session, caller=caller, group_id=group_id)
    versions.check(row.version, expected_version)
    members = AudienceRepository(session, caller.workspace_id).in_groups([row.id])
    if members and not detach:
        raise Conflict(
            f"the group holds {len(members)} audience(s); move them or pass detach=true",
            code="group_not_empty",
            extra={"audiences": [{"id": a.id, "key": a.key, "name": a.name} for a in members]},
        )
    now = utcnow()
    for audience in members:
        audience.group_id = None
        audience.updated_at = now
        audience.updated_by = caller.actor
    try:
        session.flush()
        GroupRepository(session, caller.workspace_id).delete(row)
    except StaleDataError as exc:
        raise versions.stale() from exc


def writable_view(row: AudienceGroupRow) -> GroupWrite:
    """The writable fields of a stored group."""
    return GroupWrite(name=row.name, description=row.description)


def to_model(
    row: AudienceGroupRow,
    *,
    audience_count: int,
    audiences: list[Relationship] | None = None,
) -> Group:
    """The public shape of a group."""
    return Group(
        id=row.id,
        name=row.name,
        description=row.description,
        audience_count=audience_count,
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
        created_by=row.created_by,
        updated_by=row.updated_by,
        audiences=audiences,
    )


def _duplicate(name: str) -> Conflict:
    return Conflict(f"a group named {name!r} already exists", code="duplicate_name")


def relationships(session: Session, *, caller: Caller, ids: list[str]) -> dict[str, Relationship]:
    """The slim shape of each of these groups that exists, by id (for ``include=group``)."""
    found = GroupRepository(session, caller.workspace_id).get_many(ids)
    return {gid: Relationship(id=row.id, name=row.name) for gid, row in found.items()}


def audience_counts(session: Session, *, caller: Caller, ids: list[str]) -> dict[str, int]:
    """How many audiences each of these groups holds."""
    return AudienceRepository(session, caller.workspace_id).count_by_group(ids)
