"""The embedded profile engine: one DuckDB file, one table and one pid sequence per workspace.

One process owns the file. Writes (upserts, deletes, new columns) take one lock and run on one
connection; reads run on a cursor of their own (taken from a small pool of idle ones), so they
proceed in parallel with writes under DuckDB's snapshot isolation. The exception is streaming's
read of events, served from the workspace's streaming copy (``duckdb_streaming_copy``) under
the lock, which is held by its build (a scan of the events) too. One engine per file and
process: its caches (the id index, the seen event ids, the streaming copies) see only the
writes made through it. An upsert appends the merged row and deletes the old one: updating
several columns of 1,000 scattered rows in place costs DuckDB 5-10 times more.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from itertools import compress
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import numpy as np
from pyroaring import AbstractBitMap, BitMap

from audiences.engines import conditions, duckdb_events, duckdb_streaming_copy, portable, queries
from audiences.engines import duckdb_sql as sql
from audiences.engines.base import (
    RESERVED_COLUMNS,
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
from audiences.engines.duckdb_streaming_copy import StreamingCopy
from audiences.engines.event_writes import (
    batch_results,
    check_events,
    event_ids,
    external_ids,
    split_duplicates,
)
from audiences.engines.idfiles import IdFile
from audiences.engines.idindex import AMBIGUOUS, IdIndex
from audiences.engines.rows import EventReader, ProfileReader
from audiences.engines.schema import (
    catalog_tables,
    checked_schema,
    extra_moves,
    held_columns,
    refuse_type_changes,
)
from audiences.engines.seen_ids import MAX_HELD, HashArray, SeenIds
from audiences.engines.writes import WritePlan, merge_row, plan_writes
from audiences.errors import Conflict, Unprocessable
from audiences.kit.clock import utcnow
from audiences.kit.files import private_dir
from audiences.schemas.attributes import AttributeSchema, AttributeType
from audiences.schemas.events import RESERVED_EVENT_FIELDS, Event

K = TypeVar("K")

MAX_PID = 2**32 - 1

log = logging.getLogger("audiences.engines")
QUERY_ERRORS = (
    duckdb.BinderException,
    duckdb.CatalogException,
    duckdb.ConversionException,
    duckdb.InvalidInputException,
    duckdb.NotImplementedException,
    duckdb.OutOfRangeException,
    duckdb.ParserException,
)
"""DuckDB errors that mean the WHERE-SQL cannot run on this data, not that the engine broke."""

IDLE_CURSORS = 4
"""Read cursors kept open between reads: a new one costs ~0.5 ms (cursor and ``SET TimeZone``)."""


@dataclass
class _Workspace:
    """What the engine keeps about one workspace; ``schema`` is replaced, never mutated."""

    table: str
    sequence: str
    schema: dict[str, AttributeType]
    events: str = ""
    event_schema: dict[str, AttributeType] = field(default_factory=dict)
    index: IdIndex | None = None
    copy: StreamingCopy | None = None
    seen: SeenIds | None = None


@dataclass(frozen=True)
class _Stored:
    pid: int
    rowid: int


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
        self._workspaces: dict[str, _Workspace] = {}
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
                    self._add_attribute(state, name, kind)

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
            written = self._apply(state, plan) if plan.writes else {}
        return plan.results(written)

    def get_profile(self, workspace_id: str, external_id: str) -> Profile | None:
        """One profile by external id, found through the hash index and confirmed in SQL."""
        state = self._workspace(workspace_id)
        if state is None:
            return None
        with self._lock:
            stored = self._resolve(state, [external_id])[1].get(external_id)
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
            rows = cur.execute(query, [_valid_pids(pids)]).fetchall()
        read = ProfileReader(schema)
        found = {row[0]: read(row) for row in rows}
        return [found.get(pid) for pid in pids]

    def delete_profile(self, workspace_id: str, external_id: str) -> int | None:
        """Delete one profile and return its pid; the pid is never given out again."""
        state = self._workspace(workspace_id)
        if state is None:
            return None
        with self._lock:
            hashes, found = self._resolve(state, [external_id])
            stored = found.get(external_id)
            if stored is None:
                return None
            cur = self._writer
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
                self._follow_copy(
                    state, lambda copy: cur.execute(f"DELETE FROM {copy} WHERE pid = ?", erase)
                )
            finally:
                self._index(state).remove(hashes[external_id], stored.pid)
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
            found = self._resolve(state, list(external_ids))[1]
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
            hashes, found = self._resolve(state, wanted)
            pids = {eid: stored.pid for eid, stored in found.items()}
            fresh = [eid for eid in dict.fromkeys(wanted) if eid not in pids]
            if fresh:
                self._create_empty(state, fresh, hashes, pids)
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
                return self._select(cur, state, condition, params, aliases)
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
            # Defence in depth behind the checker: a name the catalog lacks is never looked up
            # among Python variables (a replacement scan; this setting holds for the cursor
            # alone). enable_external_access would stop file reads too, but it is global and
            # one-way: it would stop the engine's own imports; the checker refuses files.
            cur.execute("SET python_enable_replacements = false")
            timer = None
            if timeout_seconds is not None:
                timer = threading.Timer(timeout_seconds, cur.interrupt)
                timer.start()
            try:
                described = cur.execute(f"DESCRIBE {pointed}").fetchall()
                by_pid = str(described[0][1]).upper() in sql.INTEGER_TYPES
                found = cur.execute(sql.members_of_query(state.table, pointed, by_pid))
                return pids_to_bitmap(found.fetchnumpy()["pid"])
            except duckdb.InterruptException:
                raise Unprocessable(
                    f"the SQL source ran longer than {timeout_seconds:g} s and was stopped",
                    code="engine_query_timeout",
                ) from None
            except QUERY_ERRORS as error:
                raise conditions.member_query_refused(
                    error, str(error).splitlines()[0], tables
                ) from None
            finally:
                if timer is not None:
                    timer.cancel()

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
                key: self._select(cur, state, condition, bound.get(key, ()))
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
            passed, refused = check_events(records, state.event_schema)
            cur = self._writer
            # Taken out while the write runs: after a failure it might lack an id stored.
            seen, state.seen = state.seen, None
            cur.execute("BEGIN TRANSACTION")
            try:
                ids = event_ids(passed)
                hashes = duckdb_events.id_hashes(cur, ids) if ids else None
                seen = self._seen_ids(state, seen, dedupe_since)
                stored = self._stored_ids(state, seen, ids, hashes, known_new, dedupe_since)
                fresh, duplicates = split_duplicates(passed, stored)
                external = external_ids(fresh, duplicates)
                profile_hashes, found = self._resolve(state, external)
                pids = {eid: row.pid for eid, row in found.items()}
                new = [eid for eid in external if eid not in pids]
                pids.update(zip(new, self._insert_empty(state, new), strict=True))
                batch = None
                if fresh:
                    batch = duckdb_events.columns(state.event_schema, fresh, pids)
                    received = received_at or utcnow()
                    duckdb_events.insert(cur, state.events, state.event_schema, batch, received)
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            try:  # the committed write reaches every cache, whichever step fails
                if batch is not None:
                    self._follow_copy(state, lambda _: self._append_copy(state, batch))
            finally:
                if seen is not None and hashes is not None:
                    seen.add(hashes)  # a duplicate's hash again too: harmless
                state.seen = seen
                self._index(state).add_many(
                    [profile_hashes[eid] for eid in new], [pids[eid] for eid in new]
                )
        return batch_results(len(records), refused, fresh, duplicates, pids)

    def _seen_ids(
        self, state: _Workspace, seen: SeenIds | None, since: datetime | None
    ) -> SeenIds | None:
        """The hashes of the stored ids to look a batch up in (under the lock, in the write's
        transaction): ``seen``, or built now when there is none, it holds ids since a later
        moment than ``since`` or it is stale; None when the window holds more than
        :data:`~audiences.engines.seen_ids.MAX_HELD` events. Without ``since`` (every stored
        id counts) the lookup scans, and ``seen`` is only kept."""
        if since is None or (seen is not None and seen.since <= since and not seen.stale()):
            return seen
        cur = self._writer
        if duckdb_events.received_since(cur, state.events, since) > MAX_HELD:
            return None
        return SeenIds(since, duckdb_events.held_hashes(cur, state.events, since))

    def _stored_ids(
        self,
        state: _Workspace,
        seen: SeenIds | None,
        ids: list[str],
        hashes: HashArray | None,
        known_new: frozenset[str],
        since: datetime | None,
    ) -> set[str]:
        """Which of ``ids`` (their ``hashes``) are stored, received since ``since``; those in
        ``known_new`` are not looked up. Only the ids whose hash ``seen`` holds are looked up
        in SQL, when it holds the ids since ``since``: usually none, and no scan."""
        if seen is not None and since is not None and hashes is not None:
            ids = list(compress(ids, seen.held(hashes).tolist()))
        if known_new:
            ids = [i for i in ids if i not in known_new]
        if not ids:
            return set()
        return duckdb_events.stored_event_ids(self._writer, state.events, ids, since)

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
                table = self._copy_for(state, slices)
                if table is not None:
                    return duckdb_events.read_of(
                        self._writer, table, state.event_schema, _valid_pids(pids), slices
                    )
        with self._cursor() as cur:
            return duckdb_events.read_of(
                cur, state.events, state.event_schema, _valid_pids(pids), slices
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
            query = f'DELETE FROM {state.events} WHERE "timestamp" < ?'
            row = self._writer.execute(query, [before]).fetchone()
            follow = 'DELETE FROM {} WHERE "timestamp" < ?'
            self._follow_copy(
                state, lambda copy: self._writer.execute(follow.format(copy), [before])
            )
        return int(row[0]) if row else 0

    # Moving a workspace (base.Portable): exact pids, events in copy order, idempotent imports.

    def last_pid(self, workspace_id: str) -> int:
        """The highest pid the workspace ever gave out, 0 if none."""
        state = self._workspace(workspace_id)
        if state is None:
            return 0
        with self._lock:
            return self._last_pid(state)

    def reserve_pids(self, workspace_id: str, through: int) -> None:
        """Make new profiles get pids above ``through``."""
        state = self._workspace(workspace_id, create=True)
        assert state is not None
        with self._lock:
            if through > self._last_pid(state):
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
            cur, schema = self._writer, state.schema
            cur.execute("BEGIN TRANSACTION")
            try:
                query = f"SELECT pid FROM {state.table} WHERE pid IN (SELECT unnest(?::UINTEGER[]))"
                held = {
                    row[0]
                    for row in cur.execute(
                        query, [_valid_pids([p.pid for p in profiles])]
                    ).fetchall()
                }
                rows = [portable.profile_row(p, schema) for p in profiles if p.pid not in held]
                if rows:
                    document = sql.rows_document(rows, schema)
                    cur.execute(sql.insert_rows(state.table, schema), {"rows": document})
                    highest = max(row[0] for row in rows)
                    if highest > self._last_pid(state):
                        cur.execute(sql.restart_sequence(state.sequence, highest + 1))
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            state.index = None
        return len(rows)

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
        schema = state.event_schema
        start, skip = (after.pid, after.count) if after else (0, 0)
        with self._cursor() as cur:
            query = sql.export_events(state.events, list(schema))
            rows = cur.execute(query, {"start": start, "skip": skip, "limit": limit}).fetchall()
        read = EventReader(schema)
        events = [(int(row[0]), read(row)) for row in rows]
        return events, portable.cursor_after(events, after) if events else None

    def import_events(
        self, workspace_id: str, events: Sequence[MovedEvent], *, after: EventCursor | None
    ) -> int:
        """Append the events of a batch the table does not hold yet, in one transaction."""
        state = self._workspace(workspace_id, create=True)
        assert state is not None
        with self._lock:
            cur, schema = self._writer, state.event_schema
            state.seen = None  # it would lack the ids moved in: built again when next needed
            cur.execute("BEGIN TRANSACTION")
            try:
                row = cur.execute(sql.last_event_cursor(state.events)).fetchone()
                held = EventCursor(int(row[0]), int(row[1])) if row else None
                fresh = portable.left_to_write(events, after, held)
                if fresh:
                    rows = [portable.event_row(moved, schema) for moved in fresh]
                    document = sql.columns_document(rows, [*sql.EVENT_KINDS, *schema.values()])
                    cur.execute(sql.insert_events(state.events, schema), {"rows": document})
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            if fresh:
                self._forget_copy(state)
        return len(fresh)

    def _last_pid(self, state: _Workspace) -> int:
        """The larger of the sequence's last pid and the table's (under the lock)."""
        name = state.sequence.strip('"')
        row = self._writer.execute(
            "SELECT coalesce(last_value, start_value - 1) FROM duckdb_sequences()"
            " WHERE schema_name = 'main' AND sequence_name = ?",
            [name],
        ).fetchone()
        top = self._writer.execute(f"SELECT coalesce(max(pid), 0) FROM {state.table}").fetchone()
        return max(int(row[0]) if row else 0, int(top[0]) if top else 0)

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

    # Internals: cursors, workspace state, the id index.

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

    def _workspace(self, workspace_id: str, *, create: bool = False) -> _Workspace | None:
        check_workspace_id(workspace_id)
        with self._lock:
            state = self._workspaces.get(workspace_id) or self._load(workspace_id, create)
            if state is not None:
                self._workspaces[workspace_id] = state
            return state

    def _load(self, workspace_id: str, create: bool) -> _Workspace | None:
        name = sql.table_name(workspace_id)
        columns = self._columns(name)
        if not columns and not create:
            return None
        state = _Workspace(sql.quote(name), sql.quote("pids_" + name.removeprefix("profiles_")), {})
        state.events = sql.quote(sql.events_table_name(workspace_id))
        self._create_storage(state)
        state.schema = {
            column: sql.ATTRIBUTE_TYPES[kind]
            for column, kind in columns
            if column not in RESERVED_COLUMNS
        }
        state.event_schema = {
            column: sql.ATTRIBUTE_TYPES[kind]
            for column, kind in self._columns(sql.events_table_name(workspace_id))
            if column not in RESERVED_EVENT_FIELDS
        }
        return state

    def _columns(self, table: str) -> list[tuple[str, str]]:
        """A table's columns and types, none when it does not exist. ``pragma_table_info``
        looks the one table up; ``duckdb_columns()`` lists every table's columns first, which
        made opening each workspace cost in proportion to how many there are (400 tables:
        3.7 ms a lookup against 0.4 ms)."""
        try:
            return self._writer.execute(
                "SELECT name, type FROM pragma_table_info(?) ORDER BY cid",
                [f"main.{sql.quote(table)}"],
            ).fetchall()
        except duckdb.CatalogException:
            return []

    def _create_storage(self, state: _Workspace) -> None:
        """The workspace's tables (profiles, events) and pid sequence, made together and
        whichever is missing (files written before events existed get their events table).

        Both come in one transaction; a file written by a process killed between the two
        statements (as this engine once ran them) has the table alone, and gets its sequence
        here, starting after every pid the table holds.
        """
        cur = self._writer
        cur.execute("BEGIN TRANSACTION")
        try:
            cur.execute(sql.create_table(state.table))
            row = cur.execute(f"SELECT coalesce(max(pid), 0) + 1 FROM {state.table}").fetchone()
            start = int(row[0]) if row else 1
            cur.execute(f"CREATE SEQUENCE IF NOT EXISTS {state.sequence} START {start}")
            cur.execute(sql.create_events_table(state.events))
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise

    def _copy_for(self, state: _Workspace, slices: Sequence[EventSlice]) -> str | None:
        """The table of the workspace's streaming copy, (re)built when it does not serve
        ``slices`` and pruned when due; None when the events table is to be read (no copy is
        kept of these slices, or building one failed). Under the lock."""
        copy = state.copy
        if copy is not None and copy.serves(slices, list(state.event_schema)):
            self._follow_copy(
                state,
                lambda _: duckdb_streaming_copy.prune(self._writer, copy, slices, state.events),
            )
            return state.copy.table if state.copy else None
        state.copy = None  # until the new one stands
        try:
            state.copy = duckdb_streaming_copy.build(
                self._writer, self._copies, state.events, state.event_schema, slices
            )
        except duckdb.Error:  # read the table, and try again only after a while
            log.warning("no streaming copy of %s: building it failed", state.events, exc_info=True)
            state.copy = duckdb_streaming_copy.no_copy(slices, state.event_schema)
        return state.copy.table

    def _append_copy(self, state: _Workspace, batch: duckdb_events.Columns) -> None:
        held = state.copy
        assert held is not None
        if held.properties != tuple(state.event_schema):  # a property came since it was built
            self._forget_copy(state)
            return
        with duckdb_events.registered(self._writer, batch) as source:
            duckdb_streaming_copy.append(self._writer, held, source, state.event_schema)

    def _follow_copy(self, state: _Workspace, change: Callable[[str], object]) -> None:
        """Make the change the events table just had (a committed one) to the streaming copy,
        if the workspace has one; a copy the change fails on is dropped (the next read
        rebuilds it), never left behind the table."""
        if state.copy is None or state.copy.table is None:
            return
        try:
            change(state.copy.table)
        except Exception:  # a cache: whatever went wrong, it goes (and is built again)
            log.warning("streaming copy of %s dropped after a failed change", state.events)
            self._forget_copy(state)

    def _forget_copy(self, state: _Workspace) -> None:
        """Drop the workspace's streaming copy (the next streaming read builds a new one)."""
        state.copy = None
        with suppress(duckdb.Error):  # nothing reads it now; only its memory is at stake
            duckdb_streaming_copy.drop(self._writer, self._copies, state.events)

    def _index(self, state: _Workspace) -> IdIndex:
        if state.index is None:
            query = f"SELECT hash(external_id) AS h, pid FROM {state.table}"
            arrays = self._writer.execute(query).fetchnumpy()
            state.index = IdIndex(np.asarray(arrays["h"]), np.asarray(arrays["pid"], np.int64))
        return state.index

    def _hashes(self, external_ids: list[str]) -> dict[str, int]:
        query = "SELECT list_transform(?::VARCHAR[], lambda x: hash(x))"
        row = self._writer.execute(query, [external_ids]).fetchone()
        return dict(zip(external_ids, row[0] if row else [], strict=True))

    def _resolve(
        self, state: _Workspace, external_ids: list[str]
    ) -> tuple[dict[str, int], dict[str, _Stored]]:
        """Hash each id, and confirm in SQL the stored row of each id that has one."""
        hashes, rows = self._stored_rows(state, external_ids, "external_id, pid, rowid")
        return hashes, {eid: _Stored(pid, rowid) for eid, pid, rowid in rows}

    def _stored_rows(
        self, state: _Workspace, external_ids: list[str], columns: str
    ) -> tuple[dict[str, int], list[tuple[Any, ...]]]:
        """Each id's hash, and ``columns`` of the stored row of each id that has one (the
        columns must start with ``external_id``, which confirms the index's candidate)."""
        hashes = self._hashes(external_ids)
        candidates = self._index(state).lookup(list(hashes.values()))
        by_pid = [pid for pid in candidates if pid > 0]
        exact = [eid for eid, pid in zip(hashes, candidates, strict=True) if pid == AMBIGUOUS]
        select = f"SELECT {columns} FROM {state.table} WHERE"
        if len(by_pid) == 1:
            # One id (every cold read): an equality the scan can skip row groups on, about
            # twice as fast as the semi-join below.
            rows = self._writer.execute(f"{select} pid = ?", by_pid).fetchall()
        else:
            rows = self._writer.execute(
                f"{select} pid IN (SELECT unnest(?::UINTEGER[]))", [by_pid]
            ).fetchall()
        if exact:  # Only for hashes shared by two ids: this scans every external id.
            query = f"{select} external_id IN (SELECT unnest(?::VARCHAR[]))"
            rows += self._writer.execute(query, [exact]).fetchall()
        wanted = set(external_ids)
        return hashes, [row for row in rows if row[0] in wanted]

    def _apply(self, state: _Workspace, plan: WritePlan) -> dict[int, Profile]:
        """Write a checked plan in one transaction, then teach the index the new ids; the
        profiles as written, by pid.

        The old rows are read once, merged with the writes here, and the merged rows appended
        from one JSON document: joining the old rows inside the INSERT made DuckDB scan every
        column of the table, and returning the rows cost as much again.
        """
        cur, schema = self._writer, state.schema
        names = list(schema)
        # A column every write names is never read from the old row: NULL in its place spares
        # the scan that column (reading every column of 1M rows tripled this statement).
        named = set(names).intersection(*(write.values for write in plan.writes))
        kept = [sql.quote(name) if name not in named else "NULL" for name in names]
        # updated_at is not read either: the merged row gets now.
        leading = ["pid", "external_id", "extra", "NULL"]
        columns = ", ".join(["external_id", *leading, *kept, "rowid"])
        cur.execute("BEGIN TRANSACTION")
        try:
            hashes, rows = self._stored_rows(state, [w.external_id for w in plan.writes], columns)
            old = {row[0]: row[1:-1] for row in rows}
            rowids = {row[0]: row[-1] for row in rows}
            self._assign_pids(state, plan, {eid: row[0] for eid, row in old.items()})
            now = utcnow()
            merged = [merge_row(w, old.get(w.external_id), names, now) for w in plan.writes]
            document = sql.rows_document(merged, schema)
            cur.execute(sql.insert_rows(state.table, schema), {"rows": document})
            # Only the rows of ids this batch wrote: never another id's row found by its hash.
            stale = [rowids[w.external_id] for w in plan.writes if w.external_id in rowids]
            if stale:
                cur.execute(f"DELETE FROM {state.table} WHERE rowid IN (SELECT unnest(?))", [stale])
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        created = [write for write in plan.writes if write.created]
        self._index(state).add_many(
            [hashes[w.external_id] for w in created], [w.pid for w in created]
        )
        read = ProfileReader(schema)
        return {row[0]: read(row) for row in merged}

    def _assign_pids(self, state: _Workspace, plan: WritePlan, stored: dict[str, int]) -> None:
        fresh = [write for write in plan.writes if write.external_id not in stored]
        query = "SELECT nextval(?) AS pid FROM range(?) ORDER BY pid"
        pids = (
            self._writer.execute(query, [state.sequence, len(fresh)]).fetchnumpy()["pid"].tolist()
        )
        if pids and pids[-1] > MAX_PID:
            raise Conflict("This workspace has used every pid.", code="pids_exhausted")
        for write, pid in zip(fresh, pids, strict=True):
            write.pid, write.created = int(pid), True
        for write in plan.writes:
            if not write.created:
                write.pid = stored[write.external_id]

    def _create_empty(
        self, state: _Workspace, fresh: list[str], hashes: dict[str, int], pids: dict[str, int]
    ) -> None:
        pids.update(zip(fresh, self._insert_empty(state, fresh), strict=True))
        self._index(state).add_many([hashes[eid] for eid in fresh], [pids[eid] for eid in fresh])

    def _insert_empty(self, state: _Workspace, fresh: list[str]) -> list[int]:
        """Insert an empty profile per id (new ids, checked); their pids, in order. The index
        is the caller's to teach, once the rows are committed."""
        if not fresh:
            return []
        query = "SELECT nextval(?) AS pid FROM range(?) ORDER BY pid"
        made = self._writer.execute(query, [state.sequence, len(fresh)]).fetchnumpy()["pid"]
        if len(made) and int(made[-1]) > MAX_PID:
            raise Conflict("This workspace has used every pid.", code="pids_exhausted")
        pids = [int(pid) for pid in made]
        self._writer.execute(
            f"INSERT INTO {state.table} (pid, external_id, updated_at)"
            " SELECT unnest(?::UINTEGER[]), unnest(?::VARCHAR[]), ?",
            [pids, fresh, utcnow()],
        )
        return pids

    def _add_attribute(self, state: _Workspace, name: str, kind: AttributeType) -> None:
        """Add the column and move ``extra`` values that fit its type, in one transaction."""
        cur = self._writer
        cur.execute("BEGIN TRANSACTION")
        try:
            cur.execute(sql.add_column(state.table, name, kind))
            self._backfill(state, name, kind)
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        state.schema = {**state.schema, name: kind}

    def _backfill(self, state: _Workspace, name: str, kind: AttributeType) -> None:
        # The value is under its dotted name, or nested in an extra written before nested
        # objects were flattened at ingest: ``{"addr": {"city": …}}`` for ``addr.city``.
        flat = f'$."{name}"'
        nested = "$." + ".".join(f'"{part}"' for part in name.split("."))
        query = (
            f"SELECT pid, extra FROM {state.table}"
            " WHERE json_exists(extra, ?) OR json_exists(extra, ?)"
        )
        rows = self._writer.execute(query, [flat, nested]).fetchall()
        moves = extra_moves(rows, name, kind)
        if moves:
            pids, values, extras = (list(column) for column in zip(*moves, strict=True))
            self._writer.execute(
                sql.move_from_extra(state.table, name, kind), [pids, values, extras]
            )

    @staticmethod
    def _select(
        cur: duckdb.DuckDBPyConnection,
        state: _Workspace,
        condition: str,
        params: Params,
        aliases: Sequence[str] = (),
    ) -> BitMap:
        joins = "".join(
            f" LEFT JOIN {sql.quote(a)} ON {sql.quote(a)}.pid = profiles.pid" for a in aliases
        )
        # Behavioural conditions read the workspace's events as `events` (docs/rules.md).
        reads = sql.reads_events(condition)
        cte = f"WITH events AS (SELECT * FROM {state.events}) " if reads else ""
        query = (
            f"{cte}SELECT profiles.pid FROM {state.table} AS profiles{joins} WHERE ({condition})"
        )
        bound = dict(params) if isinstance(params, Mapping) else list(params)
        try:
            result = cur.execute(query, bound).fetchnumpy()
        except QUERY_ERRORS as error:
            raise conditions.condition_refused(error, _reason(error)) from None
        return pids_to_bitmap(result["pid"])


QUERY_FAILURES: tuple[tuple[type[Exception], str], ...] = (
    (duckdb.ConversionException, "a value cannot be converted to the type the rule needs"),
    (duckdb.OutOfRangeException, "a computed number is out of range"),
)


def _reason(error: Exception) -> str:
    return next(
        (words for kind, words in QUERY_FAILURES if isinstance(error, kind)), conditions.CANNOT_RUN
    )


def _valid_pids(pids: Sequence[int]) -> list[int]:
    return [pid for pid in pids if 0 < pid <= MAX_PID]


def _pid_array(pids: Sequence[int]) -> np.ndarray[Any, np.dtype[np.int64]]:
    """The pids as an int64 array, one that is not a pid (not 1 to ``MAX_PID``) as 0, which
    no profile has."""
    try:
        asked = np.asarray(pids, dtype=np.int64)
    except OverflowError:  # beyond 64 bits: no pid either
        asked = np.array([p if 0 < p <= MAX_PID else 0 for p in pids], dtype=np.int64)
    return np.where((asked > 0) & (asked <= MAX_PID), asked, 0)
