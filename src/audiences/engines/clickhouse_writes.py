"""Writes in the ClickHouse engine: versioned rows appended, pids allocated, extras moved.

ClickHouse has neither sequences nor transactions, so a write is an append: the merged row
under a version above every earlier one (a ReplacingMergeTree keeps the latest), a delete a
tombstone row. Pids come from the workspace's high-water mark, kept in memory and written
before any row uses them. The engine (:mod:`audiences.engines.clickhouse`) reads the stored
rows and calls these under the workspace's write lock; every insert first calls the
workspace's ``held`` check (with a coordinator, that its cross-process lock still holds).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from audiences.engines import clickhouse_sql as sql
from audiences.engines.base import Profile
from audiences.engines.clickhouse_client import Client
from audiences.engines.coerce import COERCERS
from audiences.engines.coordination import WriteCoordinator
from audiences.engines.rows import ProfileReader
from audiences.engines.schema import extra_moves
from audiences.engines.writes import WritePlan, merge_row
from audiences.errors import Conflict
from audiences.kit.clock import utcnow
from audiences.schemas.attributes import AttributeType

MAX_PID = 2**32 - 1

TYPES: dict[AttributeType, Callable[[object], Any]] = {
    **COERCERS,
    AttributeType.TIMESTAMP: sql.ranged(COERCERS[AttributeType.TIMESTAMP]),
    AttributeType.DATE: sql.ranged(COERCERS[AttributeType.DATE]),
}
"""The value checks of this engine: every engine's, times narrowed to what ClickHouse holds."""

_RANGED = (AttributeType.TIMESTAMP, AttributeType.DATE)
_ROW_KINDS = (
    AttributeType.INTEGER,
    AttributeType.STRING,
    AttributeType.STRING,
    AttributeType.TIMESTAMP,
)
"""The kinds of :data:`clickhouse_sql.ROW_COLUMNS` as a document encodes them."""


@dataclass
class Workspace:
    """What the engine keeps about one workspace; schemas are replaced, never mutated."""

    profiles: str
    events: str
    counter: str
    schema: dict[str, AttributeType] = field(default_factory=dict)
    event_schema: dict[str, AttributeType] = field(default_factory=dict)
    next_pid: int = 1
    workspace_id: str = ""
    read_at: float = 0.0
    """When the schemas were read (``time.monotonic``)."""
    write_lock: threading.RLock = field(default_factory=threading.RLock)
    """Held by this process's writes of the workspace (reads take no lock)."""
    held: Callable[[], None] = field(default=lambda: None)
    """Raises unless the write lock still holds: called before each insert of a write."""


class Writer:
    """Appends a workspace's rows through one client; its caller holds the engine's lock."""

    def __init__(self, client: Client, coordinator: WriteCoordinator | None = None) -> None:
        self._client = client
        self._coordinator = coordinator
        self._version = 0

    def next_version(self, state: Workspace) -> int:
        """A version above every one this process gave: the clock in nanoseconds, so that
        versions written by a later process are higher still (with a coordinator, above every
        one any process gave, whatever the clocks say)."""
        self._version = max(time.time_ns(), self._version + 1)
        if self._coordinator is not None:
            self._version = self._coordinator.next_version(
                state.workspace_id, at_least=self._version
            )
        return self._version

    def allocate(self, state: Workspace, count: int) -> list[int]:
        """``count`` new pids, the high-water mark written before any row uses them (with a
        coordinator, reserved there first: other processes give out pids too)."""
        if not count:
            return []
        first = state.next_pid
        if self._coordinator is not None:
            above = state.next_pid - 1
            first = self._coordinator.reserve_pids(state.workspace_id, count, above=above)
        last = first + count - 1
        self._mark(state, last)
        return list(range(first, last + 1))

    def reserve_through(self, state: Workspace, through: int) -> None:
        """No new pid at or below ``through`` from now on, in any process: the high-water
        mark raised (with a coordinator, there first) before a row uses a pid up to it."""
        if self._coordinator is not None:
            self._coordinator.reserve_pids(state.workspace_id, 0, above=through)
        if through >= state.next_pid:
            self._mark(state, through)

    def _mark(self, state: Workspace, last: int) -> None:
        if last > MAX_PID:
            raise Conflict("This workspace has used every pid.", code="pids_exhausted")
        state.held()
        self._client.command(f"INSERT INTO {state.counter} (high) VALUES ({last})")
        state.next_pid = max(state.next_pid, last + 1)

    def insert_empty(self, state: Workspace, fresh: list[str]) -> dict[str, int]:
        """An empty profile per new external id; their pids."""
        pids = dict(zip(fresh, self.allocate(state, len(fresh)), strict=True))
        if pids:
            columns: dict[str, list[Any]] = {
                "pid": list(pids.values()),
                "external_id": list(pids),
                "updated_at": [utcnow().isoformat()] * len(pids),
                sql.VERSION: [self.next_version(state)] * len(pids),
            }
            self._insert(state, list(columns), columns)
        return pids

    def tombstone(self, state: Workspace, pid: int, external_id: str) -> None:
        """Hide a profile: a row under a new version with ``Deleted`` = 1."""
        columns: dict[str, list[Any]] = {
            "pid": [pid],
            "external_id": [external_id],
            "updated_at": [utcnow().isoformat()],
            sql.VERSION: [self.next_version(state)],
            sql.DELETED: [1],
        }
        self._insert(state, list(columns), columns)

    def apply(
        self, state: Workspace, plan: WritePlan, stored: Sequence[list[Any]]
    ) -> dict[int, Profile]:
        """Merge the writes into their ``stored`` rows (new ids get pids), append the merged
        rows under a new version; the profiles as written, by pid."""
        names = list(state.schema)
        old = {row[1]: row for row in stored}
        fresh = [write for write in plan.writes if write.external_id not in old]
        for write, pid in zip(fresh, self.allocate(state, len(fresh)), strict=True):
            write.pid, write.created = pid, True
        for write in plan.writes:
            if not write.created:
                write.pid = int(old[write.external_id][0])
        now = utcnow()
        merged = [merge_row(w, old.get(w.external_id), names, now) for w in plan.writes]
        self.insert_rows(state, merged)
        read = ProfileReader(state.schema)
        return {row[0]: read(row) for row in merged}

    def insert_rows(self, state: Workspace, rows: Sequence[Sequence[Any]]) -> None:
        """Append whole rows (:func:`clickhouse_sql.select_rows` order, stored values) as the
        newest version of each."""
        built_in, declared = list(sql.ROW_COLUMNS), list(state.schema)
        kinds = [*_ROW_KINDS, *state.schema.values()]
        values = [sql.encode([row[n] for row in rows], kind) for n, kind in enumerate(kinds)]
        columns = dict(zip(built_in, values[:4], strict=True))
        columns[sql.VERSION] = [self.next_version(state)] * len(rows)
        columns.update(zip(declared, values[4:], strict=True))
        names = [*map(sql.quote, built_in), sql.VERSION, *map(sql.quote, declared)]
        self._insert(state, names, columns)

    def _insert(self, state: Workspace, names: list[str], columns: dict[str, list[Any]]) -> None:
        state.held()
        self._client.insert(state.profiles, names, sql.document(columns))

    def backfill(
        self, state: Workspace, name: str, kind: AttributeType, rows: list[list[Any]]
    ) -> None:
        """Move the ``extra`` values of ``rows`` that fit a newly declared attribute into its
        column: those rows are written again under a new version."""
        moves = {
            pid: (value, extra)
            for pid, value, extra in extra_moves([(row[0], row[2]) for row in rows], name, kind)
            if kind not in _RANGED or sql.in_range(value)
        }
        position = len(sql.ROW_COLUMNS) + list(state.schema).index(name)
        changed = []
        for row in rows:
            if row[0] in moves:
                value, extra = moves[row[0]]
                row[2], row[position] = extra, value
                changed.append(row)
        if changed:
            self.insert_rows(state, changed)
