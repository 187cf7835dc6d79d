"""The embedded profile engine: one DuckDB file, one table and one pid sequence per workspace.

One process owns the file. Writes (upserts, deletes, new columns) take one lock and run on one
connection; reads run on a cursor of their own (taken from a small pool of idle ones), so they
proceed in parallel with writes under DuckDB's snapshot isolation. The exception is streaming's
read of events, served from the workspace's streaming copy (``duckdb_streaming_copy``) under
the lock, which is held by its build (a scan of the events) too. One engine per file and
process: its caches (the id index, the seen event ids, the streaming copies) see only the
writes made through it. An upsert appends the merged row and deletes the old one: updating
several columns of 1,000 scattered rows in place costs DuckDB 5-10 times more.

This class holds the lock, the cursors and each workspace's state; the writes it runs are in
:mod:`~audiences.engines.duckdb_writes` (storage, profiles, the id index) and
:mod:`~audiences.engines.duckdb_event_writes` (events, and the caches that follow them), its
selections of pids in :mod:`~audiences.engines.duckdb_selections`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing, contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import numpy as np
from pyroaring import AbstractBitMap, BitMap

from audiences.engines import (
    duckdb_event_writes,
    duckdb_events,
    duckdb_streaming_copy,
    portable,
    queries,
)
from audiences.engines import duckdb_selections as selections
from audiences.engines import duckdb_sql as sql
from audiences.engines import duckdb_writes as writes
from audiences.engines.base import (
    EventCursor,
    EventPage,
    EventPosition,
    EventRecord,
    EventResult,
    EventSlice,
    HeldColumns,
    MovedEvent,
    Params,
    Profile,
    ProfileRecord,
    UpsertResult,
    check_membership_alias,
    check_workspace_id,
    pids_to_bitmap,
)
from audiences.engines.duckdb_idfiles import DuckDBStagedIds
from audiences.engines.duckdb_writes import MAX_PID, Workspace, valid_pids
from audiences.engines.idfiles import IdFile
from audiences.engines.rows import ProfileReader
from audiences.engines.schema import (
    catalog_tables,
    checked_schema,
    held_columns,
    refuse_type_changes,
)
from audiences.engines.writes import plan_writes
from audiences.kit.clock import utcnow
from audiences.kit.files import private_dir
from audiences.schemas.attributes import AttributeSchema, AttributeType
from audiences.schemas.events import RESERVED_EVENT_FIELDS, Event

K = TypeVar("K")

IDLE_CURSORS = 4
"""Read cursors kept open between reads: a new one costs ~0.5 ms (cursor and ``SET TimeZone``)."""

MAX_KNOWN_PIDS = 200_000
"""Remembered external id -> pid pairs (~150 bytes each) before the memory starts over."""

KNOWN_PIDS_PER_CALL = 100
"""Only small lookups (single reads) are remembered; bulk resolutions would flush them."""


class DuckDBEngine:
    """Profiles in ``<data_dir>/profiles.duckdb``; safe to share between threads."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        filename: str = "profiles.duckdb",
        memory_limit: str | None = None,
    ):
        folder = Path(data_dir)
        private_dir(folder)
        self.path = folder / filename
        config: dict[str, str | bool | int | float | list[str]] = {}
        if memory_limit:
            config["memory_limit"] = memory_limit
        self._con = duckdb.connect(str(self.path), config=config)
        self._copies = duckdb_streaming_copy.attach(self._con)
        self._lock = threading.RLock()
        self._cursor_lock = threading.Lock()
        self._idle: list[duckdb.DuckDBPyConnection] = []
        self._writer = self._new_cursor()
        self._workspaces: dict[str, Workspace] = {}
        # Confirmed external id -> pid pairs of recent lookups. A pair stays true until the
        # profile is deleted (pids are never reused), and deletion drops it under the lock.
        self._known: dict[tuple[str, str], int] = {}

    @property
    def dialect(self) -> str:
        """WHERE-SQL for this engine is compiled by sqlglot's ``duckdb`` dialect."""
        return sql.DIALECT

    def ensure_attributes(self, workspace_id: str, schema: AttributeSchema) -> None:
        """Add a typed column per new attribute and move matching ``extra`` values into it."""
        wanted = checked_schema(schema)
        state = self._workspace(workspace_id, create=True)
        assert state is not None
        with self._lock:
            refuse_type_changes(state.schema, wanted)
            for name, kind in wanted.items():
                if name not in state.schema:
                    writes.add_attribute(self._writer, state, name, kind)

    def attributes(self, workspace_id: str) -> dict[str, AttributeType]:
        """The declared attributes of a workspace, read from its columns."""
        state = self._workspace(workspace_id)
        return dict(state.schema) if state else {}

    def columns_of(self, workspace_ids: Sequence[str]) -> dict[str, HeldColumns]:
        """Every asked workspace's columns from one read of ``duckdb_columns()``."""
        tables = catalog_tables(workspace_ids, sql.table_name, sql.events_table_name)
        with self._lock:
            rows = self._writer.execute(
                "SELECT table_name, column_name, data_type FROM duckdb_columns()"
                " WHERE database_name = current_database() AND schema_name = 'main'"
                # A semi-join: list_contains(?, table_name) took 0.9 s over 400 tables.
                " AND table_name IN (SELECT unnest(?)) ORDER BY table_name, column_index",
                [list(tables)],
            ).fetchall()
        return held_columns(tables, rows, sql.ATTRIBUTE_TYPES)

    def upsert_profiles(
        self, workspace_id: str, records: Sequence[ProfileRecord], *, strict: bool = False
    ) -> list[UpsertResult]:
        """Merge each record into its profile; a record with a bad value fails alone (so does
        one naming an undeclared attribute, with ``strict``)."""
        state = self._workspace(workspace_id, create=True)
        assert state is not None
        with self._lock:
            plan = plan_writes(records, state.schema, strict=strict)
            written = writes.apply_plan(self._writer, state, plan) if plan.writes else {}
        return plan.results(written)

    def get_profile(self, workspace_id: str, external_id: str) -> Profile | None:
        """One profile by external id, found through the hash index and confirmed in SQL."""
        state = self._workspace(workspace_id)
        if state is None:
            return None
        with self._lock:
            stored = writes.resolve(self._writer, state, [external_id])[1].get(external_id)
            if stored is None:
                return None
            schema = state.schema
            query = sql.select_rows(state.table, list(schema), "pid = ? AND external_id = ?")
            row = self._writer.execute(query, [stored.pid, external_id]).fetchone()
        return ProfileReader(schema)(row) if row else None

    def get_profiles_by_pid(self, workspace_id: str, pids: Sequence[int]) -> list[Profile | None]:
        """Profiles by pid, in the order asked, None where there is none."""
        state = self._workspace(workspace_id)
        if state is None:
            return [None] * len(pids)
        schema = state.schema
        query = sql.select_rows(state.table, list(schema), "pid IN (SELECT unnest(?::UINTEGER[]))")
        with self._cursor() as cur:
            rows = cur.execute(query, [valid_pids(pids)]).fetchall()
        read = ProfileReader(schema)
        found = {row[0]: read(row) for row in rows}
        return [found.get(pid) for pid in pids]

    def delete_profile(self, workspace_id: str, external_id: str) -> int | None:
        """Delete one profile and return its pid; the pid is never given out again."""
        state = self._workspace(workspace_id)
        if state is None:
            return None
        with self._lock:
            cur = self._writer
            hashes, found = writes.resolve(cur, state, [external_id])
            stored = found.get(external_id)
            if stored is None:
                return None
            cur.execute("BEGIN TRANSACTION")
            try:
                cur.execute(
                    f"DELETE FROM {state.table} WHERE pid = ? AND external_id = ?",
                    [stored.pid, external_id],
                )
                cur.execute(f"DELETE FROM {state.events} WHERE pid = ?", [stored.pid])
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            erase = [stored.pid]
            try:  # the committed erasure reaches every cache, whichever step fails
                duckdb_event_writes.follow_copy(
                    cur,
                    self._copies,
                    state,
                    lambda copy: cur.execute(f"DELETE FROM {copy} WHERE pid = ?", erase),
                )
            finally:
                writes.index(cur, state).remove(hashes[external_id], stored.pid)
            self._known.pop((workspace_id, external_id), None)
        return stored.pid

    def pids_for(self, workspace_id: str, external_ids: Sequence[str]) -> list[int | None]:
        """The pid of each external id, in order, None where unknown."""
        known = [self._known.get((workspace_id, eid)) for eid in external_ids]
        if None not in known:
            return known
        state = self._workspace(workspace_id)
        if state is None:
            return [None] * len(external_ids)
        with self._lock:
            found = writes.resolve(self._writer, state, list(external_ids))[1]
            if len(external_ids) <= KNOWN_PIDS_PER_CALL:
                if len(self._known) + len(found) > MAX_KNOWN_PIDS:
                    self._known.clear()
                self._known.update(((workspace_id, eid), row.pid) for eid, row in found.items())
        return [found[eid].pid if eid in found else None for eid in external_ids]

    def known_pid(self, workspace_id: str, external_id: str) -> int | None:
        """The pid of a profile looked up lately, without waiting; None when not remembered."""
        return self._known.get((workspace_id, external_id))

    def ensure_profiles(
        self, workspace_id: str, external_ids: Sequence[str]
    ) -> tuple[list[int], int]:
        """The pid of each external id, in order, creating an empty profile for each unknown
        one (in one statement); and how many were created. Ids must be valid (checked)."""
        state = self._workspace(workspace_id, create=True)
        assert state is not None
        wanted = list(external_ids)
        with self._lock:
            hashes, found = writes.resolve(self._writer, state, wanted)
            pids = {eid: stored.pid for eid, stored in found.items()}
            fresh = [eid for eid in dict.fromkeys(wanted) if eid not in pids]
            if fresh:
                writes.create_empty(self._writer, state, fresh, hashes, pids)
        return [pids[eid] for eid in wanted], len(fresh)

    def stage_id_file(self, workspace_id: str, source: IdFile) -> DuckDBStagedIds:
        """Parse an id file with DuckDB's own reader on a connection of its own (see
        :mod:`audiences.engines.duckdb_idfiles`); ``IdFileUnreadable`` when it cannot."""
        state = self._workspace(workspace_id, create=True)
        assert state is not None

        def learn(hashes: np.ndarray[Any, Any], pids: np.ndarray[Any, Any]) -> None:
            if state.index is not None:  # else it is built from the table when first needed
                state.index.add_arrays(hashes, pids)

        staged = DuckDBStagedIds(
            self._new_cursor(),
            lock=self._lock,
            table=state.table,
            sequence=state.sequence,
            on_created=learn,
            now=utcnow,
        )
        try:
            staged.stage(source)
        except BaseException:
            staged.close()
            raise
        return staged

    def external_ids_for(self, workspace_id: str, pids: Sequence[int]) -> list[str | None]:
        """The external id of each pid, in order, None where unknown."""
        state = self._workspace(workspace_id)
        if state is None:
            return [None] * len(pids)
        # As one array (an ``array.array`` of a bitmap's pids is taken without a Python int
        # each): a webhook's step asks 64,000 pids, which as lists cost more than the query.
        asked = _pid_array(pids)
        wanted = asked[asked > 0]
        if not len(wanted):
            return [None] * len(pids)
        low, high = int(wanted.min()), int(wanted.max())
        # Pids close together (a page of a bitmap, a message's changes) are read as their
        # range, which DuckDB's min/max statistics narrow to a few row groups; passing them as
        # a list to join with costs more than the rows in between (measured: 0.7 against
        # 1.9 ms for 1,000 consecutive pids of 150,000 profiles).
        if high - low < 2 * len(wanted):
            query = f"SELECT pid, external_id FROM {state.table} WHERE pid BETWEEN ? AND ?"
            bound: list[Any] = [low, high]
        else:
            query = (
                f"SELECT pid, external_id FROM {state.table} "
                "WHERE pid BETWEEN ? AND ? AND pid IN (SELECT unnest(?))"
            )
            bound = [low, high, wanted.tolist()]
        with self._cursor() as cur:
            columns = cur.execute(query, bound).fetchnumpy()
        # Matched as arrays, not a dict of row tuples: 3.0 against 8.6 ms of CPU for 8,000
        # consecutive pids (a webhook's messages are made 8,000 changes at a time).
        found, ids = columns["pid"].astype(np.int64), columns["external_id"]
        if not len(found):
            return [None] * len(pids)
        order = np.argsort(found, kind="stable")
        found, ids = found[order], ids[order]
        if np.array_equal(found, asked):  # each pid asked once, in order, every one found
            return list(ids.tolist())
        # An invalid pid is asked as 0, which no profile has.
        at = np.minimum(np.searchsorted(found, asked), len(found) - 1)
        hit = found[at] == asked
        result = np.full(len(pids), None, dtype=object)
        result[hit] = ids[at[hit]]
        return list(result.tolist())

    def select_pids(
        self,
        workspace_id: str,
        where_sql: str,
        params: Params = (),
        memberships: Mapping[str, AbstractBitMap] | None = None,
    ) -> BitMap:
        """Run ``SELECT pid FROM <profiles> WHERE <where_sql>`` into a bitmap.

        Each member set in ``memberships`` is registered on the cursor as a relation of pids
        (a numpy buffer, no copy through Python objects) and left-joined under its alias.
        """
        state = self._workspace(workspace_id)
        condition = sql.checked_condition(where_sql)
        aliases = [check_membership_alias(alias) for alias in memberships or {}]
        if state is None:
            return BitMap()
        with self._cursor() as cur:
            for alias in aliases:
                members = np.asarray((memberships or {})[alias].to_array(), dtype=np.uint32)
                cur.register(alias, {"pid": members})
            try:
                return selections.select(cur, state, condition, params, aliases)
            finally:
                for alias in aliases:
                    cur.unregister(alias)

    def select_query_pids(
        self, workspace_id: str, select_sql: str, *, timeout_seconds: float | None = None
    ) -> BitMap:
        """Run a member query (checked again here) on the workspace's own tables: an integer
        column is taken as pids, any other as external ids; ids of no profile are left out.
        Past ``timeout_seconds`` the cursor is interrupted (DuckDB stops between vectors)."""
        query = queries.check_select(select_sql, sql.DIALECT)
        state = self._workspace(workspace_id)
        if state is None:
            return BitMap()
        tables = {"profiles": state.table, "events": state.events}
        pointed = queries.point_at(query, tables, sql.DIALECT)
        # A cursor of its own, closed after: an interrupt that lands once the query is done
        # must not reach whatever a pooled cursor runs next.
        with closing(self._new_cursor()) as cur:
            return selections.members(cur, state, pointed, tables, timeout_seconds)

    def select_many(
        self,
        workspace_id: str,
        predicates: Mapping[K, str],
        params: Mapping[K, Params] | None = None,
    ) -> dict[K, BitMap]:
        """One query per predicate on one cursor.

        One pass computing a boolean column per predicate was measured too (bench/engines): it
        is 10-40% slower, since most rows match some predicate and every column is fetched.
        """
        state = self._workspace(workspace_id)
        conditions = {key: sql.checked_condition(text) for key, text in predicates.items()}
        if state is None:
            return {key: BitMap() for key in conditions}
        bound = params or {}
        with self._cursor() as cur:
            return {
                key: selections.select(cur, state, condition, bound.get(key, ()))
                for key, condition in conditions.items()
            }

    def count(self, workspace_id: str) -> int:
        """How many profiles the workspace holds."""
        state = self._workspace(workspace_id)
        if state is None:
            return 0
        with self._cursor() as cur:
            row = cur.execute(f"SELECT count(*) FROM {state.table}").fetchone()
        return int(row[0]) if row else 0

    def ensure_event_properties(self, workspace_id: str, schema: AttributeSchema) -> None:
        """Add a typed column to the events table per new property."""
        wanted = checked_schema(schema, reserved=RESERVED_EVENT_FIELDS)
        state = self._workspace(workspace_id, create=True)
        assert state is not None
        with self._lock:
            refuse_type_changes(state.event_schema, wanted)
            for name, kind in wanted.items():
                if name not in state.event_schema:
                    self._writer.execute(sql.add_column(state.events, name, kind))
                    state.event_schema = {**state.event_schema, name: kind}

    def event_properties(self, workspace_id: str) -> dict[str, AttributeType]:
        """The declared event properties of a workspace, read from its columns."""
        state = self._workspace(workspace_id)
        return dict(state.event_schema) if state else {}

    def write_events(
        self,
        workspace_id: str,
        records: Sequence[EventRecord],
        *,
        received_at: datetime | None = None,
        known_new: frozenset[str] = frozenset(),
        dedupe_since: datetime | None = None,
    ) -> list[EventResult]:
        """Check the batch, drop duplicates (ids received since ``dedupe_since``: those whose
        hash the workspace's :class:`SeenIds` holds, confirmed in SQL), then in one transaction
        create the unknown profiles and append the events; the id index learns the new
        profiles, and the seen ids the batch's ids, after the commit."""
        state = self._workspace(workspace_id, create=True)
        assert state is not None
        with self._lock:
            return duckdb_event_writes.write(
                self._writer,
                self._copies,
                state,
                records,
                received_at=received_at,
                known_new=known_new,
                dedupe_since=dedupe_since,
            )

    def events_of(
        self,
        workspace_id: str,
        pids: Sequence[int],
        *,
        slices: Sequence[EventSlice] | None = None,
    ) -> dict[int, list[Event]]:
        """Each pid's events (in one of ``slices`` when given), oldest first, read on a cursor
        of their own."""
        state = self._workspace(workspace_id)
        if state is None or not pids or (slices is not None and not slices):
            return {}
        if slices is not None and duckdb_streaming_copy.worth_copying(slices):
            with self._lock:  # the copy changes only under the lock
                table = duckdb_event_writes.copy_for(self._writer, self._copies, state, slices)
                if table is not None:
                    return duckdb_events.read_of(
                        self._writer, table, state.event_schema, valid_pids(pids), slices
                    )
        with self._cursor() as cur:
            return duckdb_events.read_of(
                cur, state.events, state.event_schema, valid_pids(pids), slices
            )

    def pids_with_events_between(
        self, workspace_id: str, ranges: Sequence[tuple[datetime, datetime]]
    ) -> BitMap:
        """The pids with an event timed in one of ``ranges`` (bounds included)."""
        state = self._workspace(workspace_id)
        if state is None or not ranges:
            return BitMap()
        params = [moment for bounds in ranges for moment in bounds]
        with self._cursor() as cur:
            found = cur.execute(sql.pids_between(state.events, len(ranges)), params).fetchnumpy()
        return pids_to_bitmap(found["pid"])

    def profile_events(
        self,
        workspace_id: str,
        pid: int,
        *,
        limit: int,
        after: EventPosition | None = None,
        names: Sequence[str] = (),
    ) -> EventPage:
        """One page of a profile's events, newest first."""
        state = self._workspace(workspace_id)
        if state is None:
            return EventPage([], None)
        with self._cursor() as cur:
            return duckdb_events.read_page(
                cur, state.events, state.event_schema, pid, limit=limit, after=after, names=names
            )

    def drop_events_before(self, workspace_id: str, before: datetime) -> int:
        """Delete the workspace's events older than ``before``; how many were deleted."""
        state = self._workspace(workspace_id)
        if state is None:
            return 0
        with self._lock:
            return duckdb_event_writes.drop_before(self._writer, self._copies, state, before)

    def last_pid(self, workspace_id: str) -> int:
        """The highest pid the workspace ever gave out, 0 if none."""
        state = self._workspace(workspace_id)
        if state is None:
            return 0
        with self._lock:
            return writes.last_pid(self._writer, state)

    def reserve_pids(self, workspace_id: str, through: int) -> None:
        """Make new profiles get pids above ``through``."""
        state = self._workspace(workspace_id, create=True)
        assert state is not None
        with self._lock:
            if through > writes.last_pid(self._writer, state):
                self._writer.execute(sql.restart_sequence(state.sequence, through + 1))

    def export_profiles(self, workspace_id: str, *, after_pid: int, limit: int) -> list[Profile]:
        """Up to ``limit`` profiles with a pid above ``after_pid``, by pid."""
        state = self._workspace(workspace_id)
        if state is None:
            return []
        schema = state.schema
        query = sql.select_rows(state.table, list(schema), "pid > ?") + " ORDER BY pid LIMIT ?"
        with self._cursor() as cur:
            rows = cur.execute(query, [after_pid, limit]).fetchall()
        read = ProfileReader(schema)
        return [read(row) for row in rows]

    def import_profiles(self, workspace_id: str, profiles: Sequence[Profile]) -> int:
        """Append the profiles whose pids are not stored, in one transaction, and move the
        pid sequence past them; the id index is rebuilt when next needed."""
        state = self._workspace(workspace_id, create=True)
        assert state is not None
        with self._lock:
            return writes.import_profiles(self._writer, state, profiles)

    def count_events(self, workspace_id: str) -> int:
        """How many events the workspace holds."""
        state = self._workspace(workspace_id)
        if state is None:
            return 0
        with self._cursor() as cur:
            row = cur.execute(f"SELECT count(*) FROM {state.events}").fetchone()
        return int(row[0]) if row else 0

    def count_event_ids(self, workspace_id: str) -> int:
        """How many distinct ``event_id``s the workspace's events hold."""
        state = self._workspace(workspace_id)
        if state is None:
            return 0
        with self._cursor() as cur:
            row = cur.execute(f"SELECT count(DISTINCT event_id) FROM {state.events}").fetchone()
        return int(row[0]) if row else 0

    def export_events(
        self, workspace_id: str, *, after: EventCursor | None, limit: int
    ) -> tuple[list[MovedEvent], EventCursor | None]:
        """Up to ``limit`` events after ``after`` in copy order, and the cursor after them."""
        state = self._workspace(workspace_id)
        if state is None:
            return [], None
        start, skip = (after.pid, after.count) if after else (0, 0)
        with self._cursor() as cur:
            events = duckdb_events.export(cur, state.events, state.event_schema, start, skip, limit)
        return events, portable.cursor_after(events, after) if events else None

    def import_events(
        self, workspace_id: str, events: Sequence[MovedEvent], *, after: EventCursor | None
    ) -> int:
        """Append the events of a batch the table does not hold yet, in one transaction."""
        state = self._workspace(workspace_id, create=True)
        assert state is not None
        with self._lock:
            return duckdb_event_writes.import_moved(
                self._writer, self._copies, state, events, after
            )

    def close(self) -> None:
        """Close the database file; calls after this fail."""
        with self._lock:
            with self._cursor_lock:
                idle, self._idle = self._idle, []
            for cur in idle:
                cur.close()
            with suppress(duckdb.ConnectionException):  # closed before: closing is idempotent
                duckdb_streaming_copy.detach(self._writer, self._copies)
            self._writer.close()
            self._con.close()

    # Internals: cursors, workspace state.

    def _new_cursor(self) -> duckdb.DuckDBPyConnection:
        with self._cursor_lock:
            cur = self._con.cursor()
        # Rules may cast timestamps to dates; the Python predicates do that in UTC too.
        cur.execute("SET TimeZone = 'UTC'")
        return cur

    @contextmanager
    def _cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read cursor of this thread's own, returned to the idle pool after use."""
        with self._cursor_lock:
            cur = self._idle.pop() if self._idle else None
        if cur is None:
            cur = self._new_cursor()
        try:
            yield cur
        except BaseException:
            cur.close()  # it may hold a half-read result: not worth keeping
            raise
        with self._cursor_lock:
            kept = len(self._idle) < IDLE_CURSORS
            if kept:
                self._idle.append(cur)
        if not kept:
            cur.close()

    def _workspace(self, workspace_id: str, *, create: bool = False) -> Workspace | None:
        check_workspace_id(workspace_id)
        with self._lock:
            state = self._workspaces.get(workspace_id) or writes.load(
                self._writer, workspace_id, create
            )
            if state is not None:
                self._workspaces[workspace_id] = state
            return state


def _pid_array(pids: Sequence[int]) -> np.ndarray[Any, np.dtype[np.int64]]:
    """The pids as an int64 array, one that is not a pid (not 1 to ``MAX_PID``) as 0, which
    no profile has."""
    try:
        asked = np.asarray(pids, dtype=np.int64)
    except OverflowError:  # beyond 64 bits: no pid either
        asked = np.array([p if 0 < p <= MAX_PID else 0 for p in pids], dtype=np.int64)
    return np.where((asked > 0) & (asked <= MAX_PID), asked, 0)
