"""Moving workspaces from one profile engine to another (``audiences engines move``).

A move copies a workspace's profiles (pids kept) then its events (ids and receipt times kept)
in batches, from a source engine to a target engine that both implement
:class:`audiences.engines.base.Portable`. Memberships need no copy: they are Roaring bitmaps of
pids in the metadata database, and every pid means the same profile after the move.

A move is resumable. After each batch the target has committed, a checkpoint file (JSON, one
per workspace) records where the copy stands; run again, the move continues from there. A
batch the target committed before the checkpoint was written is sent again and skipped by the
target's import (see :mod:`audiences.engines.portable`), so nothing is written twice. A target
that holds data for the workspace is refused unless the checkpoint says it is this move's.
At the end the counts of profiles, events and distinct event ids must match, and a random sample
of profiles (and their events) must read the same on both engines.

Writes must be stopped while a move runs (docs/deploy.md): the copy is not a live replication.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from audiences.engines.base import EventCursor, Portable, ProfileEngine
from audiences.errors import Conflict, ErrorDetail, InvalidParameter, NotFound
from audiences.schemas.events import Event
from audiences.store.tables.workspaces import WorkspaceRow

BATCH_SIZE = 5_000
"""Profiles, or events, copied per batch (one target transaction and one checkpoint each)."""

MAX_BATCH_SIZE = 100_000
"""The largest batch a move accepts: a batch is held in memory whole."""

SAMPLE_SIZE = 200
"""Pids drawn at random at the end of a move, whose profiles and events must read the same."""

CHECKPOINT_VERSION = 1


@dataclass
class MoveState:
    """Where one workspace's move stands: the checkpoint's content, and its progress."""

    workspace_id: str
    route: str
    """Which source and target the move runs between (a resumed move must name the same)."""
    phase: str = "profiles"
    """``profiles``, ``events``, ``checking`` or ``done``."""
    last_pid: int = 0
    """The pid of the last profile the target committed (profiles are copied by pid)."""
    events_after: tuple[int, int] | None = None
    """The :class:`EventCursor` of the last event the target committed, as (pid, count)."""
    profiles_moved: int = 0
    events_moved: int = 0
    profiles_total: int = 0
    events_total: int = 0
    resumed: bool = False
    sampled: int = field(default=0)


Progress = Callable[[MoveState], None]
"""Called after each batch the target committed (and at each change of phase)."""


class Checkpoints:
    """Checkpoint files in one folder, ``<workspace id>.json``, each replaced atomically."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, workspace_id: str) -> Path:
        """The checkpoint file of a workspace's move."""
        return self.folder / f"{workspace_id}.json"

    def load(self, workspace_id: str) -> MoveState | None:
        """The recorded state of a workspace's move, or None when none was started."""
        path = self.path(workspace_id)
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        if data.pop("version", None) != CHECKPOINT_VERSION:
            raise Conflict(
                f"The checkpoint {path} was written by another version; remove it and move "
                "again into an empty target.",
                code="engine_move_checkpoint_invalid",
            )
        after = data.pop("events_after", None)
        return MoveState(**data, events_after=tuple(after) if after else None)

    def save(self, state: MoveState) -> None:
        """Record a move's state (written beside, then renamed over the old file)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path(state.workspace_id)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"version": CHECKPOINT_VERSION, **asdict(state)}))
        os.replace(temporary, path)


def workspace_ids(session: Session, slug: str | None = None) -> list[str]:
    """The engine ids of the workspace named ``slug``, or of every workspace (by slug)."""
    query = select(WorkspaceRow.id).order_by(WorkspaceRow.slug)
    if slug is not None:
        query = query.where(WorkspaceRow.slug == slug)
    found = list(session.scalars(query))
    if slug is not None and not found:
        raise NotFound(f"No workspace is named {slug!r}.", code="workspace_not_found")
    return found


def move_workspace(
    source: ProfileEngine,
    target: ProfileEngine,
    workspace_id: str,
    *,
    route: str,
    checkpoints: Checkpoints,
    batch_size: int = BATCH_SIZE,
    on_progress: Progress | None = None,
    sample_size: int = SAMPLE_SIZE,
) -> MoveState:
    """Copy one workspace's profiles and events from ``source`` to ``target``, continuing a
    move its checkpoint records; check the copy; the final state (phase ``done``).

    ``Conflict`` when the target holds data of the workspace that is not this move's
    (``engine_move_target_not_empty``), when a checkpoint names another route
    (``engine_move_route_changed``), or when the check finds a difference
    (``engine_move_mismatch``).
    """
    old, new = _portable(source), _portable(target)
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise InvalidParameter(
            f"A batch is 1 to {MAX_BATCH_SIZE:,} rows.", code="engine_move_batch_invalid"
        )
    state = checkpoints.load(workspace_id)
    if state is None:
        if target.count(workspace_id) or new.count_events(workspace_id):
            raise Conflict(
                f"The target engine holds data of workspace {workspace_id!r} already; a move "
                "goes into an empty workspace (or resumes its own checkpoint).",
                code="engine_move_target_not_empty",
            )
        state = MoveState(workspace_id, route)
    elif state.route != route:
        raise Conflict(
            f"The checkpoint of workspace {workspace_id!r} is of a move {state.route}, not "
            f"{route}; finish that move, or remove {checkpoints.path(workspace_id)} and the "
            "target's data.",
            code="engine_move_route_changed",
        )
    else:
        state.resumed = True
    state.profiles_total = source.count(workspace_id)
    state.events_total = old.count_events(workspace_id)
    # What the target holds is the truth (a batch it committed may not be in the checkpoint).
    state.profiles_moved = target.count(workspace_id)
    state.events_moved = new.count_events(workspace_id)
    checkpoints.save(state)

    def report(phase: str | None = None) -> None:
        if phase is not None:
            state.phase = phase
        checkpoints.save(state)
        if on_progress is not None:
            on_progress(state)

    target.ensure_attributes(workspace_id, source.attributes(workspace_id))
    target.ensure_event_properties(workspace_id, source.event_properties(workspace_id))
    if state.phase == "profiles":
        report()
        while batch := old.export_profiles(
            workspace_id, after_pid=state.last_pid, limit=batch_size
        ):
            state.profiles_moved += new.import_profiles(workspace_id, batch)
            state.last_pid = batch[-1].pid
            report()
        new.reserve_pids(workspace_id, old.last_pid(workspace_id))
        report("events")
    if state.phase == "events":
        while True:
            after = EventCursor(*state.events_after) if state.events_after else None
            events, following = old.export_events(workspace_id, after=after, limit=batch_size)
            if not events or following is None:
                break
            state.events_moved += new.import_events(workspace_id, events, after=after)
            state.events_after = (following.pid, following.count)
            report()
        report("checking")
    if state.phase in ("checking", "done"):
        state.sampled = check_copy(source, target, workspace_id, sample_size=sample_size)
        report("done")
    return state


def check_copy(
    source: ProfileEngine, target: ProfileEngine, workspace_id: str, *, sample_size: int
) -> int:
    """Compare the counts of profiles, events and distinct event ids (into PostgreSQL a later
    copy of an id arrives without it, so ids are counted, not the events with one), the pid
    sequences, and a random sample of pids' profiles and events on both engines; ``Conflict``
    (``engine_move_mismatch``) listing every difference. How many pids were sampled."""
    old, new = _portable(source), _portable(target)
    problems: list[ErrorDetail] = []

    def differ(what: str, was: object, now: object) -> None:
        message = f"{what}: {was!r} in the source, {now!r} in the target"
        problems.append(ErrorDetail("engine_move_mismatch", message, (workspace_id, what)))

    pairs = [
        ("profiles", source.count(workspace_id), target.count(workspace_id)),
        ("events", old.count_events(workspace_id), new.count_events(workspace_id)),
        ("event ids", old.count_event_ids(workspace_id), new.count_event_ids(workspace_id)),
    ]
    for what, was, now in pairs:
        if was != now:
            differ(what, was, now)
    last = old.last_pid(workspace_id)
    if new.last_pid(workspace_id) < last:
        differ("last pid", last, new.last_pid(workspace_id))
    pids = sorted(random.sample(range(1, last + 1), min(sample_size, last))) if last else []
    for pid, was_profile, now_profile in zip(
        pids,
        source.get_profiles_by_pid(workspace_id, pids),
        target.get_profiles_by_pid(workspace_id, pids),
        strict=True,
    ):
        if was_profile != now_profile:
            differ(f"profile {pid}", was_profile, now_profile)
    was_events = source.events_of(workspace_id, pids)
    now_events = target.events_of(workspace_id, pids)
    for pid in pids:
        if sorted_events(was_events.get(pid, [])) != sorted_events(now_events.get(pid, [])):
            differ(f"events of profile {pid}", len(was_events.get(pid, [])), "others")
    if problems:
        raise Conflict(
            f"The copy of workspace {workspace_id!r} differs from its source.",
            code="engine_move_mismatch",
            errors=problems[:20],
        )
    return len(pids)


def sorted_events(events: Sequence[Event]) -> list[Event]:
    """Events in an order that does not depend on the engine (ties on time are sorted by
    their whole content)."""
    return sorted(events, key=lambda e: (e.timestamp, e.name, repr(sorted(e.properties.items()))))


def _portable(engine: ProfileEngine) -> Portable:
    if not isinstance(engine, Portable):
        raise InvalidParameter(
            f"The {engine.dialect} engine cannot move workspaces in or out.",
            code="engine_not_portable",
        )
    return engine
