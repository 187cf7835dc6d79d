"""What profile attributes and event properties share: a workspace's typed names.

Each is declared through the API or inferred from the first value that tells its type; its
type never changes; each is a typed column of the profile engine, made before its row is
written; a workspace holds at most a limit of them. :class:`Kind` says what differs between
the two (their table, words, limit, error codes and engine columns); ``services.attributes``
and ``services.event_properties`` keep what is their own (inference rules, strictness, the
public shape).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from audiences.engines.base import HeldColumns, ProfileEngine, check_workspace_id
from audiences.errors import Conflict, InvalidParameter, ValidationFailed
from audiences.schemas.attributes import MAX_ATTRIBUTES, AttributeType
from audiences.store.tables import AttributeRow, EventPropertyRow
from audiences.store.tables.workspaces import WorkspaceRow

RowT = TypeVar("RowT", AttributeRow, EventPropertyRow)


@dataclass(frozen=True)
class Kind(Generic[RowT]):
    """One kind of typed name: its table, how errors name it, its limit per workspace, the
    codes of its two refusals, and the engine's columns for it (read, and made)."""

    row: type[RowT]
    noun: str
    plural: str
    limit: int
    type_conflict: str
    too_many: str
    columns: Callable[[ProfileEngine, str], Mapping[str, AttributeType]]
    held: Callable[[HeldColumns], Mapping[str, AttributeType]]
    ensure: Callable[[ProfileEngine, str, dict[str, AttributeType]], None]


ATTRIBUTES = Kind(
    row=AttributeRow,
    noun="attribute",
    plural="attributes",
    limit=MAX_ATTRIBUTES,
    type_conflict="attribute_type_conflict",
    too_many="too_many_attributes",
    columns=lambda engine, workspace_id: engine.attributes(workspace_id),
    held=lambda columns: columns.attributes,
    ensure=lambda engine, workspace_id, types: engine.ensure_attributes(workspace_id, types),
)
EVENT_PROPERTIES = Kind(
    row=EventPropertyRow,
    noun="event property",
    plural="event properties",
    limit=MAX_ATTRIBUTES,  # each is a column of the workspace's events table
    type_conflict="event_property_type_conflict",
    too_many="too_many_event_properties",
    columns=lambda engine, workspace_id: engine.event_properties(workspace_id),
    held=lambda columns: columns.event_properties,
    ensure=lambda engine, workspace_id, types: engine.ensure_event_properties(workspace_id, types),
)


def schema(session: Session, *, kind: Kind[RowT], workspace_id: str) -> dict[str, AttributeType]:
    """Every name of this kind the workspace has, and its type."""
    # Two columns, not whole rows: every refresh and streaming write reads this.
    rows = session.execute(
        select(kind.row.name, kind.row.type).where(kind.row.workspace_id == workspace_id)
    )
    return {name: AttributeType(type_) for name, type_ in rows}


def declare(
    session: Session,
    *,
    kind: Kind[RowT],
    workspace_id: str,
    profiles: ProfileEngine,
    name: str,
    type_: AttributeType,
    description: str | None,
) -> tuple[RowT, bool]:
    """Declare a name (idempotent: declaring it again sets its description and makes it
    declared, not inferred); its type never changes (``Conflict``). Returns (row, created)."""
    lock_schema(session, workspace_id)
    row = session.get(kind.row, (workspace_id, name))
    if row is not None:
        if row.type != type_.value:
            raise Conflict(
                f"{kind.noun} {name!r} is a {row.type}; a type cannot change",
                code=kind.type_conflict,
            )
        row.description = description
        row.inferred = False
        session.flush()
        return row, False
    _add(session, kind, workspace_id, {name: type_}, profiles, inferred=False)
    row = session.get_one(kind.row, (workspace_id, name))
    row.description = description
    session.flush()
    return row, True


def declare_inferred(
    session: Session,
    *,
    kind: Kind[RowT],
    workspace_id: str,
    profiles: ProfileEngine,
    found: Mapping[str, AttributeType],
) -> None:
    """Declare the names inference ``found`` (in order) that are still undeclared once the
    schema is locked, as far as the limit leaves room; the rest stay undeclared."""
    lock_schema(session, workspace_id)
    current = schema(session, kind=kind, workspace_id=workspace_id)  # another writer's, too
    room = max(kind.limit - len(current), 0)
    new = [name for name in found if name not in current][:room]
    if not new:
        return
    # A column left by a transaction that rolled back keeps its type: declare that one.
    columns = kind.columns(profiles, workspace_id)
    wanted = {name: columns.get(name, found[name]) for name in new}
    _add(session, kind, workspace_id, wanted, profiles, inferred=True)


@dataclass
class Restored:
    """What the profile engine lacked of one workspace's declared schema when it was opened:
    the columns made again, by kind (its ``plural``), and the columns it holds under another
    type than the metadata declares, by kind (its ``noun``; left as they are: name ->
    (declared, held)), and the kinds it could not look at or repair, with the error (a busy
    or unreachable engine: the process starts anyway and tries again at its next start)."""

    workspace_id: str
    made: dict[str, list[str]] = field(default_factory=dict)
    mistyped: dict[str, dict[str, tuple[AttributeType, AttributeType]]] = field(
        default_factory=dict
    )
    failed: dict[str, str] = field(default_factory=dict)


def restore_columns(session: Session, engine: ProfileEngine) -> list[Restored]:
    """Make every column the metadata declares that ``engine`` lacks, in every workspace.

    The metadata is the source of truth for the declared schema; an engine whose data was
    lost or replaced (a new DuckDB file, another server) would otherwise refuse every rule
    and keep declared values in ``extra``. Run when a process opens its engine: one query per
    kind, one read of the engine's catalog for every workspace that declares anything
    (``columns_of``: a start costs the same with 10 workspaces or 1,000), and a change only
    where a column is missing (the engines add only what they lack, so processes starting
    together agree). A workspace the engine cannot check or repair is reported failed, and
    the others are still done. Returns what was found wrong, by workspace.
    """
    kinds: tuple[Kind[Any], ...] = (ATTRIBUTES, EVENT_PROPERTIES)
    declared = {kind: _declared(session, kind) for kind in kinds}
    workspaces = sorted({workspace_id for found in declared.values() for workspace_id in found})
    found: dict[str, Restored] = {}
    if not workspaces:
        return []
    checkable: list[str] = []
    for workspace_id in workspaces:
        try:
            checkable.append(check_workspace_id(workspace_id))
        except InvalidParameter as error:  # no engine table can bear its name: it alone fails
            for kind, names in declared.items():
                if workspace_id in names:
                    _failed(found, workspace_id, kind, error)
    try:
        held = engine.columns_of(checkable)
    except Exception as error:  # the catalog could not be read: no workspace was checked
        for kind, names in declared.items():
            for workspace_id in names:
                if workspace_id not in found:  # those failed above keep their own reason
                    _failed(found, workspace_id, kind, error)
        return list(found.values())
    for kind, names in declared.items():
        for workspace_id, types in names.items():
            if workspace_id not in held:
                continue  # failed above
            try:
                _restore_one(engine, kind, workspace_id, types, held[workspace_id], found)
            except Exception as error:  # one workspace's engine trouble must not stop a start
                _failed(found, workspace_id, kind, error)
    return list(found.values())


def _failed(
    found: dict[str, Restored], workspace_id: str, kind: Kind[RowT], error: Exception
) -> None:
    restored = found.setdefault(workspace_id, Restored(workspace_id))
    restored.failed[kind.plural] = f"{type(error).__name__}: {error}"


def _restore_one(
    engine: ProfileEngine,
    kind: Kind[RowT],
    workspace_id: str,
    declared: dict[str, AttributeType],
    columns: HeldColumns,
    found: dict[str, Restored],
) -> None:
    held = kind.held(columns)
    missing = {name: type_ for name, type_ in declared.items() if name not in held}
    mistyped = {
        name: (type_, held[name])
        for name, type_ in declared.items()
        if name in held and held[name] != type_
    }
    if not missing and not mistyped:
        return
    restored = found.setdefault(workspace_id, Restored(workspace_id))
    if mistyped:
        restored.mistyped[kind.noun] = mistyped
    if missing:
        kind.ensure(engine, workspace_id, missing)
        restored.made[kind.plural] = sorted(missing)


def _declared(session: Session, kind: Kind[RowT]) -> dict[str, dict[str, AttributeType]]:
    """Every workspace's declared names of this kind, in one query."""
    rows = session.execute(select(kind.row.workspace_id, kind.row.name, kind.row.type))
    declared: dict[str, dict[str, AttributeType]] = defaultdict(dict)
    for workspace_id, name, type_ in rows:
        declared[workspace_id][name] = AttributeType(type_)
    return declared


def lock_schema(session: Session, workspace_id: str) -> None:
    """Serialise schema changes of one workspace on its row (PostgreSQL; SQLite writers are
    serial already), so two writers inferring or declaring one name (of an attribute, an
    event property or an event name) cannot both insert."""
    session.execute(
        select(WorkspaceRow.id).where(WorkspaceRow.id == workspace_id).with_for_update()
    )


def _add(
    session: Session,
    kind: Kind[RowT],
    workspace_id: str,
    new: Mapping[str, AttributeType],
    profiles: ProfileEngine,
    *,
    inferred: bool,
) -> None:
    count = session.scalar(
        select(func.count()).select_from(kind.row).where(kind.row.workspace_id == workspace_id)
    )
    if (count or 0) + len(new) > kind.limit:
        raise ValidationFailed(
            f"a workspace has at most {kind.limit} {kind.plural}", code=kind.too_many
        )
    current = schema(session, kind=kind, workspace_id=workspace_id)
    kind.ensure(profiles, workspace_id, {**current, **new})
    for name, type_ in new.items():
        session.add(
            kind.row(workspace_id=workspace_id, name=name, type=type_.value, inferred=inferred)
        )
    session.flush()
