"""The ClickHouse profile engine: versioned profile rows, events by profile and time, bitmaps.

A workspace has three tables in the engine's database: its profiles (a ReplacingMergeTree of
versioned rows: a write appends the merged row under a higher version, a delete appends a
tombstone, reads take the latest row of each pid with FINAL), its events (a MergeTree ordered
by pid and time) and its pid high-water mark. Members come back as
``groupBitmapState``, read into pyroaring from ClickHouse's serialized form, from a server
and from chdb alike.

A workspace's writes are serialised by a lock of its own in this process, which also
allocates pids (ClickHouse has no sequence): one process writes a workspace's profiles at a
time (docs/engines.md), unless the engine is given a
:class:`~audiences.engines.coordination.WriteCoordinator`, whose lock, pids and versions every
writing process shares. Reads take no write lock, and other workspaces' writes another.
ClickHouse itself runs in process (chdb) or on a server (clickhouse-connect), behind
:mod:`audiences.engines.clickhouse_client`.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

import orjson
from pyroaring import AbstractBitMap, BitMap

from audiences.engines import clickhouse_events as events_sql
from audiences.engines import clickhouse_sql as sql
from audiences.engines import conditions, portable, queries
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
)
from audiences.engines.clickhouse_client import ClickHouseError, Client
from audiences.engines.clickhouse_writes import MAX_PID, TYPES, Workspace, Writer
from audiences.engines.conditions import checked_condition, reads_events
from audiences.engines.coordination import WriteCoordinator
from audiences.engines.duckdb_sql import events_table_name, table_name
from audiences.engines.event_writes import (
    batch_results,
    check_events,
    external_ids,
    ids_to_check,
    split_duplicates,
)
from audiences.engines.rows import ProfileReader
from audiences.engines.schema import (
    SCHEMA_TTL,
    catalog_tables,
    checked_schema,
    held_columns,
    refuse_type_changes,
)
from audiences.engines.writes import plan_writes
from audiences.errors import Unprocessable
from audiences.kit.clock import utcnow
from audiences.schemas.attributes import AttributeSchema, AttributeType
from audiences.schemas.events import RESERVED_EVENT_FIELDS, Event

K = TypeVar("K")
log = logging.getLogger("audiences.engines")

CONVERSION_CODES = frozenset({6, 27, 38, 41, 70, 72})
RANGE_CODES = frozenset({69, 321, 407})
QUERY_CODES = frozenset({1, 36, 42, 43, 44, 46, 47, 48, 53, 62, 153, 184, 215, 352, 386})
"""ClickHouse error codes that mean a condition cannot run on this data, not that the engine
broke: conversions, ranges, and the rest (unknown names, types, syntax)."""
PROFILE_BOOKKEEPING = RESERVED_COLUMNS | {sql.VERSION, sql.DELETED}
"""The profile table's columns that are no attribute."""
OVERFLOW = "cannot be safely converted"
"""How ClickHouse words an integer overflow the compiled SQL caught (``accurateCast``, see
``Spelling.checked_integers``; its code is the conversions' 70)."""


class ClickHouseEngine:
    """Profiles and events in one ClickHouse database; safe to share between threads."""

    def __init__(
        self,
        client: Client,
        *,
        database: str = "audiences",
        coordinator: WriteCoordinator | None = None,
    ) -> None:
        self._client = client
        self._database = database
        self._lock = threading.Lock()  # the workspace map only, never held over a query wait
        self._loading = threading.Lock()  # loading a workspace first seen (tables made)
        self._workspaces: dict[str, Workspace] = {}
        self._coordinator = coordinator
        self._writer = Writer(client, coordinator)
        client.command(f"CREATE DATABASE IF NOT EXISTS {sql.quote(database)}")

    @property
    def dialect(self) -> str:
        """WHERE-SQL for this engine is compiled by sqlglot's ``clickhouse`` dialect."""
        return sql.DIALECT

    def ensure_attributes(self, workspace_id: str, schema: AttributeSchema) -> None:
        """Add a typed column per new attribute and move matching ``extra`` values into it."""
        wanted = checked_schema(schema)
        state = self._state(workspace_id, create=True)
        with self._writing(state):
            refuse_type_changes(state.schema, wanted)
            for name, kind in wanted.items():
                if name not in state.schema:
                    state.held()
                    self._client.command(sql.add_column(state.profiles, name, kind))
                    state.schema = {**state.schema, name: kind}
                    self._backfill(state, name, kind)

    def attributes(self, workspace_id: str) -> dict[str, AttributeType]:
        """The declared attributes of a workspace, read from its columns."""
        state = self._workspace(workspace_id)
        return dict(state.schema) if state else {}

    def columns_of(self, workspace_ids: Sequence[str]) -> dict[str, HeldColumns]:
        """Every asked workspace's columns from one read of ``system.columns``."""
        tables = catalog_tables(workspace_ids, table_name, events_table_name)
        if not tables:
            return {}
        rows = self._rows(
            "SELECT table, name, type, comment FROM system.columns"
            f" WHERE database = {sql.literal(self._database)}"
            f" AND table IN {sql.json_set(list(tables), 'String')} ORDER BY table, position"
        )
        keyed = [(table, name, (kind, comment)) for table, name, kind, comment in rows]
        return held_columns(tables, keyed, sql.ATTRIBUTE_TYPES, PROFILE_BOOKKEEPING)

    def upsert_profiles(
        self, workspace_id: str, records: Sequence[ProfileRecord], *, strict: bool = False
    ) -> list[UpsertResult]:
        """Merge each record into its profile; a record with a bad value fails alone."""
        state = self._state(workspace_id, create=True)
        with self._writing(state):
            plan = plan_writes(records, state.schema, strict=strict, types=TYPES)
            written = {}
            if plan.writes:
                stored = self._stored(state, [write.external_id for write in plan.writes])
                written = self._writer.apply(state, plan, stored)
        return plan.results(written)

    def get_profile(self, workspace_id: str, external_id: str) -> Profile | None:
        """One profile by external id."""
        state = self._workspace(workspace_id)
        if state is None:
            return None
        rows = self._stored(state, [external_id])
        return ProfileReader(state.schema)(rows[0]) if rows else None

    def get_profiles_by_pid(self, workspace_id: str, pids: Sequence[int]) -> list[Profile | None]:
        """Profiles by pid, in the order asked, None where there is none."""
        state = self._workspace(workspace_id)
        valid = _valid_pids(pids)
        if state is None or not valid:
            return [None] * len(pids)
        read = ProfileReader(state.schema)
        live = self._live(state, f"pid IN ({', '.join(map(str, valid))})")
        found = {row[0]: read(row) for row in live}
        return [found.get(pid) for pid in pids]

    def delete_profile(self, workspace_id: str, external_id: str) -> int | None:
        """Hide a profile behind a tombstone row and delete its events; its pid is never
        given out again (the high-water mark keeps it)."""
        state = self._workspace(workspace_id)
        if state is None:
            return None
        with self._writing(state):
            rows = self._stored(state, [external_id])
            if not rows:
                return None
            pid = int(rows[0][0])
            self._writer.tombstone(state, pid, external_id)
            state.held()
            self._client.command(f"DELETE FROM {state.events} WHERE pid = {pid}")
        return pid

    def pids_for(self, workspace_id: str, external_ids: Sequence[str]) -> list[int | None]:
        """The pid of each external id, in order, None where unknown."""
        state = self._workspace(workspace_id)
        if state is None:
            return [None] * len(external_ids)
        found = self._resolve(state, list(external_ids))
        return [found.get(eid) for eid in external_ids]

    def ensure_profiles(
        self, workspace_id: str, external_ids: Sequence[str]
    ) -> tuple[list[int], int]:
        """The pid of each external id, in order, creating an empty profile for each unknown
        one; and how many were created."""
        state = self._state(workspace_id, create=True)
        wanted = list(external_ids)
        with self._writing(state):
            pids = self._resolve(state, wanted)
            fresh = [eid for eid in dict.fromkeys(wanted) if eid not in pids]
            pids.update(self._writer.insert_empty(state, fresh))
        return [pids[eid] for eid in wanted], len(fresh)

    def external_ids_for(self, workspace_id: str, pids: Sequence[int]) -> list[str | None]:
        """The external id of each pid, in order, None where unknown."""
        state = self._workspace(workspace_id)
        valid = _valid_pids(pids)
        if state is None or not valid:
            return [None] * len(pids)
        query = (
            f"SELECT pid, external_id FROM {state.profiles} FINAL"
            f" WHERE pid IN ({', '.join(map(str, valid))})"
        )
        found = {row[0]: row[1] for row in self._rows(query)}
        return [found.get(pid) for pid in pids]

    def select_pids(
        self,
        workspace_id: str,
        where_sql: str,
        params: Params = (),
        memberships: Mapping[str, AbstractBitMap] | None = None,
    ) -> BitMap:
        """Run the condition over the live profiles into a bitmap (see ``_select``).

        Each member set is left-joined under its alias as a relation of pids, built in
        ClickHouse from the set's serialized bitmap (one literal, no row per member here).
        """
        state = self._workspace(workspace_id)
        condition = checked_condition(where_sql, sql.DIALECT)
        sets = {check_membership_alias(alias): bits for alias, bits in (memberships or {}).items()}
        if state is None:
            return BitMap()
        return self._select(state, sql.bound(condition, params), sets)

    def select_query_pids(
        self, workspace_id: str, select_sql: str, *, timeout_seconds: float | None = None
    ) -> BitMap:
        """Run a member query (checked again here) on the workspace's own tables: an integer
        column is taken as pids, a text one as external ids, any other refused; ids of no
        profile are left out. ``final = 1`` makes every read of the profiles take their
        latest, live rows; past ``timeout_seconds`` ClickHouse stops the query
        (``max_execution_time``)."""
        query = queries.check_select(select_sql, sql.DIALECT)
        state = self._workspace(workspace_id)
        if state is None:
            return BitMap()
        tables = {"profiles": state.profiles, "events": state.events}
        pointed = queries.point_at(query, tables, sql.DIALECT)
        settings = "final = 1, readonly = 2"
        if timeout_seconds is not None:
            settings += f", max_execution_time = {max(float(timeout_seconds), 0.001)}"
        try:
            described = self._rows(f"DESCRIBE ({pointed}) SETTINGS {settings}")
            kind = str(described[0][1])
            if sql.INTEGER.fullmatch(kind) is None and sql.TEXT.fullmatch(kind) is None:
                raise queries.wrong_column(kind)
            by_pid = sql.INTEGER.fullmatch(kind) is not None
            return self._bitmap(sql.members_of_query(state.profiles, pointed, by_pid, settings))
        except ClickHouseError as error:
            if error.code == sql.TIMEOUT_CODE:
                raise Unprocessable(
                    f"the SQL source ran longer than {timeout_seconds:g} s and was stopped",
                    code="engine_query_timeout",
                ) from None
            if error.code not in CONVERSION_CODES | RANGE_CODES | QUERY_CODES:
                raise
            raise conditions.member_query_refused(error, _said(error), tables) from None

    def select_many(
        self,
        workspace_id: str,
        predicates: Mapping[K, str],
        params: Mapping[K, Params] | None = None,
    ) -> dict[K, BitMap]:
        """One query per predicate."""
        state = self._workspace(workspace_id)
        conditions = {key: checked_condition(text, sql.DIALECT) for key, text in predicates.items()}
        if state is None:
            return {key: BitMap() for key in conditions}
        bound = params or {}
        return {
            key: self._select(state, sql.bound(condition, bound.get(key, ())), {})
            for key, condition in conditions.items()
        }

    def count(self, workspace_id: str) -> int:
        """How many profiles the workspace holds."""
        state = self._workspace(workspace_id)
        if state is None:
            return 0
        return int(self._rows(f"SELECT count() FROM {state.profiles} FINAL")[0][0])

    def ensure_event_properties(self, workspace_id: str, schema: AttributeSchema) -> None:
        """Add a typed column to the events table per new property."""
        wanted = checked_schema(schema, reserved=RESERVED_EVENT_FIELDS)
        state = self._state(workspace_id, create=True)
        with self._writing(state):
            refuse_type_changes(state.event_schema, wanted)
            for name, kind in wanted.items():
                if name not in state.event_schema:
                    state.held()
                    self._client.command(sql.add_column(state.events, name, kind))
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
        """Check the batch, drop duplicates (ids received since ``dedupe_since``), create the
        unknown profiles, append the events.

        ClickHouse has no transaction over two tables: the empty profiles are written first,
        so a failure leaves at most profiles without their events, never events without
        a profile."""
        state = self._state(workspace_id, create=True)
        with self._writing(state):
            passed, refused = check_events(records, state.event_schema, TYPES)
            passed, late = events_sql.split_out_of_range(passed)
            ids = ids_to_check(passed, known_new)
            stored = events_sql.stored_event_ids(self._client, state.events, ids, dedupe_since)
            fresh, duplicates = split_duplicates(passed, stored)
            external = external_ids(fresh, duplicates)
            pids = self._resolve(state, external)
            pids.update(
                self._writer.insert_empty(state, [eid for eid in external if eid not in pids])
            )
            if fresh:
                state.held()
                received = received_at or utcnow()
                schema = state.event_schema
                events_sql.insert(self._client, state.events, schema, fresh, pids, received)
        return batch_results(len(records), {**refused, **late}, fresh, duplicates, pids)

    def events_of(
        self,
        workspace_id: str,
        pids: Sequence[int],
        *,
        slices: Sequence[EventSlice] | None = None,
    ) -> dict[int, list[Event]]:
        """Each pid's events (in one of ``slices`` when given), oldest first."""
        state = self._workspace(workspace_id)
        valid = _valid_pids(pids)
        if state is None or not valid or (slices is not None and not slices):
            return {}
        return events_sql.read_of(self._client, state.events, state.event_schema, valid, slices)

    def pids_with_events_between(
        self, workspace_id: str, ranges: Sequence[tuple[datetime, datetime]]
    ) -> BitMap:
        """The pids with an event timed in one of ``ranges`` (bounds included)."""
        state = self._workspace(workspace_id)
        if state is None or not ranges:
            return BitMap()
        return self._bitmap(events_sql.pids_between(state.events, ranges))

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
        return events_sql.read_page(
            self._client,
            state.events,
            state.event_schema,
            pid,
            limit=limit,
            after=after,
            names=names,
        )

    def drop_events_before(self, workspace_id: str, before: datetime) -> int:
        """Delete the workspace's events older than ``before``; how many were deleted."""
        state = self._workspace(workspace_id)
        if state is None:
            return 0
        where = f"`timestamp` < {sql.timestamp(before)}"
        with self._writing(state):
            count = int(self._rows(f"SELECT count() FROM {state.events} WHERE {where}")[0][0])
            if count:
                state.held()
                self._client.command(f"DELETE FROM {state.events} WHERE {where}")
        return count

    # Moving a workspace (base.Portable): exact pids, events in copy order, idempotent imports.

    def last_pid(self, workspace_id: str) -> int:
        """The highest pid the workspace ever gave out, 0 if none: read from ClickHouse, where
        every writing process records its mark before a row uses a pid."""
        state = self._workspace(workspace_id)
        return max(state.next_pid - 1, self._high_mark(state)) if state else 0

    def reserve_pids(self, workspace_id: str, through: int) -> None:
        """Make new profiles get pids above ``through`` (the high-water mark moves up)."""
        state = self._state(workspace_id, create=True)
        with self._writing(state):
            self._writer.reserve_through(state, through)

    def export_profiles(self, workspace_id: str, *, after_pid: int, limit: int) -> list[Profile]:
        """Up to ``limit`` live profiles with a pid above ``after_pid``, by pid."""
        state = self._workspace(workspace_id)
        if state is None:
            return []
        read = ProfileReader(state.schema)
        where = f"pid > {int(after_pid)} ORDER BY pid LIMIT {int(limit)}"
        return [read(row) for row in self._live(state, where)]

    def import_profiles(self, workspace_id: str, profiles: Sequence[Profile]) -> int:
        """Append the profiles whose pids hold no live row (one insert), and move the
        high-water mark past them."""
        state = self._state(workspace_id, create=True)
        with self._writing(state):
            pids = _valid_pids([profile.pid for profile in profiles])
            held = (
                {row[0] for row in self._live(state, f"pid IN ({', '.join(map(str, pids))})")}
                if pids
                else set()
            )
            rows = [portable.profile_row(p, state.schema) for p in profiles if p.pid not in held]
            if rows:
                # Reserved before written: a crash between the two leaves no pid unreserved.
                self._writer.reserve_through(state, max(row[0] for row in rows))
                self._writer.insert_rows(state, rows)
        return len(rows)

    def count_events(self, workspace_id: str) -> int:
        """How many events the workspace holds."""
        state = self._workspace(workspace_id)
        if state is None:
            return 0
        return int(self._rows(f"SELECT count() FROM {state.events}")[0][0])

    def count_event_ids(self, workspace_id: str) -> int:
        """How many distinct ``event_id``s the workspace's events hold."""
        state = self._workspace(workspace_id)
        if state is None:
            return 0
        return int(self._rows(f"SELECT uniqExact(event_id) FROM {state.events}")[0][0])

    def export_events(
        self, workspace_id: str, *, after: EventCursor | None, limit: int
    ) -> tuple[list[MovedEvent], EventCursor | None]:
        """Up to ``limit`` events after ``after`` in copy order, and the cursor after them."""
        state = self._workspace(workspace_id)
        if state is None:
            return [], None
        start, skip = (after.pid, after.count) if after else (0, 0)
        events = events_sql.export(
            self._client, state.events, state.event_schema, start, skip, limit
        )
        return events, portable.cursor_after(events, after) if events else None

    def import_events(
        self, workspace_id: str, events: Sequence[MovedEvent], *, after: EventCursor | None
    ) -> int:
        """Append the events of a batch the table does not hold yet (one insert, under the
        engine's lock: ClickHouse has no transaction, one process moves a workspace)."""
        state = self._state(workspace_id, create=True)
        with self._writing(state):
            found = self._rows(sql.last_event_cursor(state.events))
            held = EventCursor(int(found[0][0]), int(found[0][1])) if found else None
            fresh = portable.left_to_write(events, after, held)
            if fresh:
                state.held()
                events_sql.insert_moved(self._client, state.events, state.event_schema, fresh)
        return len(fresh)

    def ping(self) -> None:
        """Return when ClickHouse answers a query; ``engine_unavailable`` otherwise."""
        self._client.query("SELECT 1", "TSV")

    def close(self) -> None:
        """Close the connection; calls after this fail."""
        with self._lock:
            self._client.close()

    # Internals: queries, workspace state, pids, writes.

    def _rows(self, query: str) -> list[list[Any]]:
        return sql.rows(self._client.query(query, "JSONCompact"))

    def _bitmap(self, query: str) -> BitMap:
        return sql.read_bitmap(self._client.query(query, "RowBinary"))

    def _select(
        self, state: Workspace, condition: str, sets: Mapping[str, AbstractBitMap]
    ) -> BitMap:
        joins = "".join(
            f" LEFT JOIN {sql.members_relation(members)} AS {sql.quote(alias)}"
            f" ON {sql.quote(alias)}.pid = profiles.pid"
            for alias, members in sets.items()
        )
        # Behavioural conditions read the workspace's events as `events` (docs/rules.md).
        cte = (
            f"WITH events AS (SELECT * FROM {state.events}) "
            if reads_events(condition, sql.DIALECT)
            else ""
        )
        # ClickHouse aggregates the members into a bitmap in its own threads: fewer bytes than
        # the pid column over a network, and in process 20-25% faster than reading that column
        # on a machine whose cores are free (bench/README.md, "Profile engines side by side").
        query = (
            f"{cte}SELECT groupBitmapState(profiles.pid) FROM {state.profiles} AS profiles"
            f" FINAL{joins} WHERE ({condition})"
        )
        try:
            return sql.read_bitmap(self._client.query(query, "RowBinary"))
        except ClickHouseError as error:
            if error.code in CONVERSION_CODES | RANGE_CODES | QUERY_CODES:
                raise conditions.condition_refused(error, _reason(error)) from None
            raise

    @contextmanager
    def _writing(self, state: Workspace) -> Iterator[None]:
        """The workspace's lock in this process, then the coordinator's (other processes may
        have declared columns since: they are read again under it, or a merged row would
        drop another process's new attribute)."""
        coordinator = self._coordinator
        with state.write_lock:
            if coordinator is None:
                yield
                return
            with coordinator.exclusive(state.workspace_id) as held:
                self._read_schemas(state)
                state.held = held
                try:
                    yield
                finally:
                    state.held = _always_held

    def _state(self, workspace_id: str, *, create: bool = False) -> Workspace:
        state = self._workspace(workspace_id, create=create)
        assert state is not None
        return state

    def _workspace(self, workspace_id: str, *, create: bool = False) -> Workspace | None:
        check_workspace_id(workspace_id)
        with self._lock:
            state = self._workspaces.get(workspace_id)
        if state is None:
            with self._loading:  # one load at a time: its CREATE TABLEs must not race
                state = self._workspaces.get(workspace_id) or self._load(workspace_id, create)
                if state is None:
                    return None
                with self._lock:
                    self._workspaces[workspace_id] = state
        stale = time.monotonic() - state.read_at > SCHEMA_TTL
        # Another process may declare; a write in progress here reads the columns anyway.
        if self._coordinator is not None and stale and state.write_lock.acquire(blocking=False):
            try:
                self._read_schemas(state)
            finally:
                state.write_lock.release()
        return state

    def _load(self, workspace_id: str, create: bool) -> Workspace | None:
        name = table_name(workspace_id)
        columns = self._columns(name)
        if not columns and not create:
            return None
        state = Workspace(
            sql.table(self._database, name),
            sql.table(self._database, events_table_name(workspace_id)),
            sql.table(self._database, "pids_" + name.removeprefix("profiles_")),
            workspace_id=workspace_id,
        )
        self._client.command(sql.create_profiles(state.profiles))
        self._client.command(sql.create_events(state.events))
        self._client.command(sql.create_counter(state.counter))
        self._read_schemas(state)
        state.next_pid = self._high_mark(state) + 1
        return state

    def _high_mark(self, state: Workspace) -> int:
        """Every pid any process gave out: the marks, and the rows (in case a mark was lost)."""
        high = self._rows(
            f"SELECT greatest((SELECT max(high) FROM {state.counter}),"
            f" (SELECT max(pid) FROM {state.profiles}), (SELECT max(pid) FROM {state.events}))"
        )
        return int(high[0][0])

    def _read_schemas(self, state: Workspace) -> None:
        """Both tables' declared columns, in one read of ``system.columns``."""
        profiles, events = table_name(state.workspace_id), events_table_name(state.workspace_id)
        found: dict[str, dict[str, AttributeType]] = {profiles: {}, events: {}}
        reserved = {profiles: PROFILE_BOOKKEEPING, events: RESERVED_EVENT_FIELDS}
        for table, column, kind, comment in self._rows(
            "SELECT table, name, type, comment FROM system.columns"
            f" WHERE database = {sql.literal(self._database)}"
            f" AND table IN ({sql.literal(profiles)}, {sql.literal(events)}) ORDER BY position"
        ):
            if column not in reserved[table]:
                found[table][column] = sql.ATTRIBUTE_TYPES[(kind, comment)]
        state.schema, state.event_schema = found[profiles], found[events]
        state.read_at = time.monotonic()

    def _columns(self, name: str) -> list[list[Any]]:
        return self._rows(
            "SELECT name, type, comment FROM system.columns"
            f" WHERE database = {sql.literal(self._database)} AND table = {sql.literal(name)}"
            " ORDER BY position"
        )

    def _stored(self, state: Workspace, external_ids: list[str]) -> list[list[Any]]:
        """The live rows of these external ids (:func:`clickhouse_sql.select_rows` order).

        The ids' pids are found by the bloom filter on ``external_id`` (tombstones included),
        then their latest rows read by pid, the sorting key, with FINAL."""
        if not external_ids:
            return []
        ids = sql.json_set(external_ids, "String")
        return self._live(
            state, f"pid IN (SELECT pid FROM {state.profiles} WHERE external_id IN {ids})"
        )

    def _live(self, state: Workspace, where: str) -> list[list[Any]]:
        """The live profile rows ``where`` selects, their values as the engines store them."""
        decode = sql.profile_rows(state.schema)
        query = sql.select_rows(state.profiles, list(state.schema), where)
        return [decode(row) for row in self._rows(query)]

    def _resolve(self, state: Workspace, external_ids: list[str]) -> dict[str, int]:
        if not external_ids:
            return {}
        ids = sql.json_set(external_ids, "String")
        query = (
            f"SELECT external_id, pid FROM {state.profiles} FINAL"
            f" WHERE pid IN (SELECT pid FROM {state.profiles} WHERE external_id IN {ids})"
        )
        return {row[0]: int(row[1]) for row in self._rows(query)}

    def _backfill(self, state: Workspace, name: str, kind: AttributeType) -> None:
        """Move ``extra`` values that fit a newly declared attribute into its column (the
        rows whose extra text names it, checked exactly by ``schema.extra_moves``)."""
        head = orjson.dumps(name.split(".")[0]).decode()[:-1]  # '"p', in '"p.s"' and '"p": {'
        rows = self._live(state, f"extra IS NOT NULL AND position(extra, {sql.literal(head)}) > 0")
        self._writer.backfill(state, name, kind, rows)


def _reason(error: ClickHouseError) -> str:
    if error.code in RANGE_CODES or OVERFLOW in str(error):
        return "a computed number is out of range"
    if error.code in CONVERSION_CODES:
        return "a value cannot be converted to the type the rule needs"
    return conditions.CANNOT_RUN


def _said(error: ClickHouseError) -> str:
    """What went wrong, without the scope and SQL ClickHouse echoes after it."""
    said = str(error).split("DB::Exception: ", 1)[-1]
    return re.split(r"\. In scope |: While processing |\. \(", said, maxsplit=1)[0]


def _always_held() -> None:
    """The ``held`` check without a coordinator: this process's lock cannot be lost."""


def _valid_pids(pids: Sequence[int]) -> list[int]:
    return [int(pid) for pid in pids if 0 < pid <= MAX_PID]
