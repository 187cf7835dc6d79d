"""Destinations: create, read, list, replace, patch, delete; rotate a webhook's secret; reset
a subscription to the full list. Delivery itself: messages are made by
:mod:`audiences.services.messages`, sent by the ``destinations.deliver`` job through
:mod:`audiences.services.delivery_sends`, their attempts recorded by
:mod:`audiences.services.deliveries`, and the log shown (and test messages sent) by
:mod:`audiences.services.delivery_log`."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from pydantic import ValidationError
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from audiences.config import Settings
from audiences.errors import Conflict, ErrorDetail, NotFound, ValidationFailed
from audiences.kit import webhooks
from audiences.kit.clock import utcnow
from audiences.schemas.common import ListQuery, PageResult
from audiences.schemas.destinations import (
    AllAudiences,
    AudienceList,
    Destination,
    DestinationCreate,
    DestinationWrite,
    GroupAudiences,
    SecretRotated,
    Subscription,
)
from audiences.services import egress, file_targets, outbox, versions
from audiences.services.callers import Caller
from audiences.services.patching import Patch, apply_patch
from audiences.services.validation import invalid_field, validation_failed
from audiences.store.repositories.destinations import DestinationRepository
from audiences.store.repositories.groups import GroupRepository
from audiences.store.tables import (
    AttributeRow,
    AudienceRow,
    DestinationCursorRow,
    DestinationMessageRow,
    DestinationRow,
)

WRITABLE = frozenset(DestinationWrite.model_fields)


@dataclass(frozen=True)
class Created:
    """A new destination and, for a webhook, its secret (shown this once)."""

    row: DestinationRow
    secret: str | None


def create(
    session: Session, *, caller: Caller, data: DestinationCreate, settings: Settings
) -> Created:
    """A new destination; its first delivery of each audience will be the full membership."""
    _check(session, caller, data, settings)
    secret = None
    if data.kind == "webhook":
        secret = data.secret or webhooks.new_secret()
        _check_secret(secret)
    elif data.secret is not None:
        raise invalid_field("secret", "secret_invalid", "a file destination takes no secret")
    row = DestinationRow(created_by=caller.actor, updated_by=caller.actor)
    _assign(row, data)
    row.secrets = [] if secret is None else [_secret_entry(secret, None)]
    if row.kind == "file":
        row.next_run_at = utcnow()
    try:
        DestinationRepository(session, caller.workspace_id).add(row)
    except IntegrityError as exc:
        raise _duplicate(data.name) from exc
    _wake(session, row)
    return Created(row, secret)


def get(session: Session, *, caller: Caller, destination_id: str) -> DestinationRow:
    """One destination of the caller's workspace; :class:`NotFound` for any other id."""
    row = DestinationRepository(session, caller.workspace_id).get(destination_id)
    if row is None:
        raise NotFound(f"no destination {destination_id!r}", code="destination_not_found")
    return row


def list_(session: Session, *, caller: Caller, query: ListQuery) -> PageResult[DestinationRow]:
    """A page of the workspace's destinations under the list conventions."""
    return DestinationRepository(session, caller.workspace_id).page(query)


def replace(
    session: Session,
    *,
    caller: Caller,
    destination_id: str,
    data: DestinationWrite,
    expected_version: Collection[int] | None,
    settings: Settings,
) -> DestinationRow:
    """Replace the writable fields (PUT). Audiences no longer followed lose their cursor (a
    later subscription starts with the full list again); turning a destination on clears
    why it was off and sends what waited."""
    row = get(session, caller=caller, destination_id=destination_id)
    versions.check(row.version, expected_version)
    if data.model_dump() == writable_view(row).model_dump():
        return row
    if data.kind != row.kind:
        raise invalid_field("kind", "destination_kind_fixed", "a destination's kind never changes")
    _check(session, caller, data, settings, before=row)
    turned_on = data.enabled and not row.enabled
    _assign(row, data)
    if turned_on:
        row.disabled_reason = row.disabled_at = None
        # Waiting messages start their retry schedule afresh (plain UPDATE, no version).
        session.execute(
            update(DestinationMessageRow)
            .where(
                DestinationMessageRow.destination_id == row.id,
                DestinationMessageRow.status == "pending",
            )
            .values(attempts=0, next_attempt_at=utcnow())
            .execution_options(synchronize_session=False)
        )
    row.updated_at = utcnow()
    row.updated_by = caller.actor
    try:
        session.flush()
    except StaleDataError as exc:
        raise versions.stale() from exc
    except IntegrityError as exc:
        raise _duplicate(data.name) from exc
    _drop_unfollowed(session, row)
    _wake(session, row)
    return row


def patch(
    session: Session,
    *,
    caller: Caller,
    destination_id: str,
    patch: Patch,
    expected_version: Collection[int] | None,
    settings: Settings,
) -> DestinationRow:
    """Apply a JSON Patch or merge patch to the writable fields, then replace."""
    row = get(session, caller=caller, destination_id=destination_id)
    versions.check(row.version, expected_version)
    current = writable_view(row).model_dump(mode="json")
    try:
        data = DestinationWrite.model_validate(apply_patch(current, patch, WRITABLE))
    except ValidationError as exc:
        raise validation_failed(exc, prefix=("body",)) from exc
    return replace(
        session,
        caller=caller,
        destination_id=destination_id,
        data=data,
        expected_version=None,
        settings=settings,
    )


def delete_(
    session: Session,
    *,
    caller: Caller,
    destination_id: str,
    expected_version: Collection[int] | None,
) -> None:
    """Delete a destination, its cursors and its delivery log."""
    row = get(session, caller=caller, destination_id=destination_id)
    versions.check(row.version, expected_version)
    try:
        DestinationRepository(session, caller.workspace_id).delete(row)
    except StaleDataError as exc:
        raise versions.stale() from exc


def rotate_secret(
    session: Session, *, caller: Caller, destination_id: str, settings: Settings
) -> SecretRotated:
    """A new signing secret; the previous ones keep signing for
    ``AUDIENCES_WEBHOOK_SECRET_OVERLAP_HOURS`` (every request carries a signature by each)."""
    row = get(session, caller=caller, destination_id=destination_id)
    if row.kind != "webhook":
        raise Conflict("only a webhook has a secret", code="destination_not_webhook")
    now = utcnow()
    until = now + timedelta(hours=settings.webhook_secret_overlap_hours)
    kept = []
    for entry in row.secrets:
        expires = _expiry(entry)
        if expires is None or expires > now:
            kept.append({**entry, "expires_at": min(expires or until, until).isoformat()})
    secret = webhooks.new_secret()
    row.secrets = [_secret_entry(secret, None), *kept]
    row.updated_at = now
    row.updated_by = caller.actor
    try:
        session.flush()
    except StaleDataError as exc:
        raise versions.stale() from exc
    return SecretRotated(secret=secret, previous_expires_at=until if kept else None)


def reset(session: Session, *, caller: Caller, destination_id: str) -> DestinationRow:
    """Send the full membership of every followed audience again (as ``entered``), then only
    changes: the destination's cursors are dropped."""
    row = get(session, caller=caller, destination_id=destination_id)
    session.execute(
        delete(DestinationCursorRow).where(DestinationCursorRow.destination_id == row.id)
    )
    if row.kind == "file":
        row.next_run_at = utcnow()
    _wake(session, row)
    return row


def active_secrets(row: DestinationRow, now: datetime) -> list[str]:
    """The secrets that sign a request sent at ``now``: the current one and those rotated out
    less than the overlap ago."""
    return [
        str(entry["secret"])
        for entry in row.secrets
        if (_expiry(entry) is None or (_expiry(entry) or now) > now)
    ]


class Followed(NamedTuple):
    """An audience a destination follows: what its messages and files name it by."""

    id: str
    key: str


def followed(session: Session, row: DestinationRow) -> list[Followed]:
    """The audiences the destination follows now, in id order. Their ids and keys only: a
    delivery run reads them at each step, and a whole row costs a second query (its
    labels) and about ten times the CPU."""
    stmt = select(AudienceRow.id, AudienceRow.key).where(
        AudienceRow.workspace_id == row.workspace_id
    )
    if row.group_id is not None:
        stmt = stmt.where(AudienceRow.group_id == row.group_id)
    elif not row.all_audiences:
        stmt = stmt.where(AudienceRow.id.in_(row.audience_ids or []))
    return [Followed(*found) for found in session.execute(stmt.order_by(AudienceRow.id))]


def backlog(session: Session, row: DestinationRow) -> int:
    """Messages not delivered yet, plus recorded revisions past the destination's cursors."""
    waiting = session.scalar(
        select(func.count())
        .select_from(DestinationMessageRow)
        .where(
            DestinationMessageRow.destination_id == row.id,
            DestinationMessageRow.status == "pending",
        )
    )
    cursors = dict(
        session.execute(
            select(DestinationCursorRow.audience_id, DestinationCursorRow.revision).where(
                DestinationCursorRow.destination_id == row.id
            )
        ).all()
    )
    return (waiting or 0) + outbox.backlog(session, cursors)


def writable_view(row: DestinationRow) -> DestinationWrite:
    """The writable fields of a stored destination."""
    return DestinationWrite.model_construct(**_writable(row))


def to_model(session: Session, row: DestinationRow, *, secret: str | None = None) -> Destination:
    """The public shape of a destination."""
    return Destination.model_construct(
        **_writable(row),
        id=row.id,
        disabled_reason=row.disabled_reason,
        disabled_at=row.disabled_at,
        last_delivery_at=row.last_delivery_at,
        last_error=row.last_error,
        backlog=backlog(session, row),
        next_run_at=row.next_run_at,
        secret=secret,
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
        created_by=row.created_by,
        updated_by=row.updated_by,
    )


def _writable(row: DestinationRow) -> dict[str, Any]:
    subscription: Subscription
    if row.all_audiences:
        subscription = AllAudiences.model_construct(all=True)
    elif row.group_id is not None:
        subscription = GroupAudiences.model_construct(group_id=row.group_id)
    else:
        subscription = AudienceList.model_construct(audience_ids=list(row.audience_ids or []))
    return {
        "name": row.name,
        "description": row.description,
        "kind": row.kind,
        "subscription": subscription,
        "attributes": list(row.attributes or []),
        "enabled": row.enabled,
        "url": row.url,
        "path": row.path,
        "format": row.format,
        "mode": row.mode,
        "interval_seconds": row.interval_seconds,
    }


def _assign(row: DestinationRow, data: DestinationWrite) -> None:
    row.name, row.description, row.kind = data.name, data.description, data.kind
    follows = data.subscription
    row.audience_ids = follows.audience_ids if isinstance(follows, AudienceList) else None
    row.group_id = follows.group_id if isinstance(follows, GroupAudiences) else None
    row.all_audiences = isinstance(follows, AllAudiences)
    row.attributes = list(data.attributes)
    row.enabled = data.enabled
    row.url, row.path = data.url, data.path
    if data.kind == "file":
        row.format, row.mode = data.format or "csv", data.mode or "full"
        row.interval_seconds = data.interval_seconds or 3600
    else:
        row.format = row.mode = row.interval_seconds = None


def _check(
    session: Session,
    caller: Caller,
    data: DestinationWrite,
    settings: Settings,
    *,
    before: DestinationRow | None = None,
) -> None:
    """The fields of its kind; references and targets: audiences and group of the workspace,
    declared attributes, a URL the SSRF guard allows, a target the operator allows
    (``file_targets``). A replaced destination (``before``) may keep naming an audience or
    group deleted since: it follows nothing there, and the destination stays writable (it can
    be renamed, or turned on again, without rewriting its subscription first)."""
    _fits_kind(data)
    if data.url is not None:
        egress.checked_url(data.url, allow_private=settings.egress_allow_private)
    if data.path is not None:
        target = file_targets.resolve(settings, data.path)
        if before is None or before.path != data.path:  # one kept may be shared from before
            _check_target_free(session, target, settings, but=None if before is None else before.id)
    follows = data.subscription
    kept = set(before.audience_ids or []) if before is not None else set()
    wanted = follows.audience_ids if isinstance(follows, AudienceList) else []
    if set(wanted) - kept:
        known = set(
            session.scalars(
                select(AudienceRow.id).where(
                    AudienceRow.workspace_id == caller.workspace_id, AudienceRow.id.in_(wanted)
                )
            )
        )
        missing = [(i, a) for i, a in enumerate(wanted) if a not in known | kept]
        if missing:
            raise ValidationFailed(
                f"no audience {missing[0][1]!r} in this workspace",
                code="unknown_audience",
                errors=[
                    ErrorDetail(
                        "unknown_audience",
                        f"no audience {a!r}",
                        ("body", "subscription", "audience_ids", i),
                    )
                    for i, a in missing
                ],
            )
    group = follows.group_id if isinstance(follows, GroupAudiences) else None
    if group is not None and before is not None and group == before.group_id:
        group = None  # kept as it was
    if group is not None and GroupRepository(session, caller.workspace_id).get(group) is None:
        raise invalid_field(
            ("subscription", "group_id"), "unknown_group", f"no audience group {group!r}"
        )
    if data.attributes:
        declared = set(
            session.scalars(
                select(AttributeRow.name).where(AttributeRow.workspace_id == caller.workspace_id)
            )
        )
        unknown = [name for name in data.attributes if name not in declared]
        if unknown:
            raise invalid_field("attributes", "unknown_attribute", f"no attribute {unknown[0]!r}")


def _check_target_free(
    session: Session, target: file_targets.Target, settings: Settings, *, but: str | None
) -> None:
    """:class:`Conflict` (``destination_path_taken``) when another file destination, of any
    workspace (the operator's root and buckets are shared), writes to the same folder or bucket
    prefix: both would name their files alike (audience key, time, message number) and each
    would overwrite the other's."""
    others = select(DestinationRow.path).where(
        DestinationRow.kind == "file", DestinationRow.path.is_not(None)
    )
    if but is not None:
        others = others.where(DestinationRow.id != but)
    for path in session.scalars(others):
        try:
            taken = file_targets.resolve(settings, path or "")
        except ValidationFailed:  # a target the operator no longer allows writes nowhere
            continue
        if taken == target:
            raise Conflict(
                "another file destination writes to this folder; choose another path",
                code="destination_path_taken",
            )


def _fits_kind(data: DestinationWrite) -> None:
    """A webhook has a ``url`` and no file fields; a file destination a ``path`` and no
    ``url``."""
    file_fields = ("path", "format", "mode", "interval_seconds")
    if data.kind == "webhook":
        wrong = [name for name in file_fields if getattr(data, name) is not None]
        if data.url is None:
            raise invalid_field("url", "destination_fields_mismatch", "a webhook needs a url")
    else:
        wrong = ["url"] if data.url is not None else []
        if data.path is None:
            raise invalid_field(
                "path", "destination_fields_mismatch", "a file destination needs a path"
            )
    if wrong:
        raise invalid_field(
            wrong[0],
            "destination_fields_mismatch",
            f"a {data.kind} destination takes no {wrong[0]}",
        )


def _check_secret(secret: str) -> None:
    try:
        webhooks.secret_key(secret)
    except webhooks.BadSecret as exc:
        raise invalid_field("secret", "secret_invalid", str(exc)) from None


def _secret_entry(secret: str, expires_at: datetime | None) -> dict[str, Any]:
    return {
        "secret": secret,
        "created_at": utcnow().isoformat(),
        "expires_at": None if expires_at is None else expires_at.isoformat(),
    }


def _expiry(entry: dict[str, Any]) -> datetime | None:
    value = entry.get("expires_at")
    return None if value is None else datetime.fromisoformat(str(value))


def _drop_unfollowed(session: Session, row: DestinationRow) -> None:
    keep = [audience.id for audience in followed(session, row)]
    session.execute(
        delete(DestinationCursorRow).where(
            DestinationCursorRow.destination_id == row.id,
            DestinationCursorRow.audience_id.not_in(keep),
        )
    )


def _wake(session: Session, row: DestinationRow) -> None:
    if row.enabled and row.kind == "webhook":
        outbox.wake(session, workspace_id=row.workspace_id, destination_id=row.id)


def _duplicate(name: str) -> Conflict:
    return Conflict(f"a destination named {name!r} already exists", code="duplicate_name")
