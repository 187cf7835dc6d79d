"""The PostgreSQL profile engine: profiles and events in one schema any number of processes share.

Each workspace has a profile table (typed columns for declared attributes, JSONB ``extra``),
a pid sequence (pids are never reused) and an events table indexed by (pid, time) and by time,
all in one schema (``audiences_profiles`` by default), so the engine can live in the metadata
database. Writes are transactions that lock the rows they merge into (in pid order) and insert
new ids with ``ON CONFLICT DO NOTHING``: two processes writing the same new external id make
one profile, and a deadlock or a lost race is retried. Bulk rows go through ``COPY`` into a
temporary table and one statement merges them. Member pids come back through ``COPY ... TO
STDOUT (FORMAT binary)`` straight into a numpy array, never a Python object per pid.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

import orjson
import psycopg
from psycopg import errors as pg_errors
from psycopg import sql as pg_sql
from psycopg.types.json import set_json_loads
from psycopg_pool import ConnectionPool, PoolTimeout
from pyroaring import AbstractBitMap, BitMap

from audiences.engines import conditions, portable, queries
from audiences.engines import postgres_events as events_sql
from audiences.engines import postgres_sql as sql
from audiences.engines import postgres_writes as writes
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
from audiences.engines.event_writes import (
    batch_results,
    check_events,
    external_ids,
    ids_to_check,
    split_duplicates,
)
from audiences.engines.postgres_copy import copy_rows, selected_pids, stage_members
from audiences.engines.postgres_writes import Workspace
from audiences.engines.rows import EventReader, ProfileReader
from audiences.engines.schema import (
    SCHEMA_TTL,
    checked_schema,
    held_columns,
    refuse_type_changes,
)
from audiences.engines.writes import WritePlan, plan_writes
from audiences.errors import ServiceUnavailable, Unprocessable
from audiences.kit.clock import utcnow
from audiences.schemas.attributes import AttributeSchema, AttributeType
from audiences.schemas.events import RESERVED_EVENT_FIELDS, Event

K = TypeVar("K")
Connection = psycopg.Connection[Any]

log = logging.getLogger("audiences.engines")


ATTEMPTS = 5
"""Tries of a write transaction that lost a race (a deadlock, a concurrent duplicate)."""

RETRIED = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure, pg_errors.UniqueViolation)

QUERY_ERROR_CLASSES = ("22", "42")
"""SQLSTATE classes that mean the WHERE-SQL cannot run on this data, not that the engine broke
(22: a value that cannot be converted, a number out of range; 42: an unknown column or
function, a type mismatch)."""


class PostgresEngine:
    """Profiles and events in PostgreSQL, through a small pool of connections; safe to share
    between threads, and between processes (each with its own engine)."""

    def __init__(
        self,
        url: str,
        *,
        schema: str = "audiences_profiles",
        pool_size: int = 8,
        connect_timeout: float = 10.0,
    ) -> None:
        self.schema = sql.checked_schema_name(schema)
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max(pool_size, 1),
            kwargs={
                "autocommit": True,
                "options": "-c TimeZone=UTC",
                "application_name": "audiences-profiles",
            },
            configure=_configure,
            # A connection the server dropped (a restart, a failover) is replaced on checkout
            # instead of failing the request that drew it.
            check=ConnectionPool.check_connection,
            open=False,
            name="audiences-profiles",
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout)
        except PoolTimeout:
            self._pool.close()
            raise unavailable(f"no connection within {connect_timeout:g} s") from None
        self._workspaces: dict[str, Workspace] = {}
        with self._transaction() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"audiences:{schema}"])
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {sql.quote(schema)}")
            conn.execute(sql.registry(schema))

    @property
    def dialect(self) -> str:
        """WHERE-SQL for this engine is compiled by sqlglot's ``postgres`` dialect."""
        return sql.DIALECT

    # Attributes.

    def ensure_attributes(self, workspace_id: str, schema: AttributeSchema) -> None:
        """Add a typed column per new attribute and move matching ``extra`` values into it,
        in one transaction holding the workspace's lock."""
        wanted = checked_schema(schema)
        state = self._state(workspace_id, create=True)
        assert state is not None
        with self._transaction() as conn:
            self._lock_workspace(conn, workspace_id)
            current = writes.columns(conn, state.profiles, RESERVED_COLUMNS)
            refuse_type_changes(current, wanted)
            for name, kind in wanted.items():
                if name not in current:
                    conn.execute(sql.add_column(state.profiles, name, kind))
                    writes.backfill(conn, state, name, kind)
                    current = {**current, name: kind}
        state.schema, state.read_at = current, time.monotonic()

    def attributes(self, workspace_id: str) -> dict[str, AttributeType]:
        """The declared attributes of a workspace, read from its columns."""
        state = self._state(workspace_id)
        return dict(self._fresh(state).schema) if state else {}

    def columns_of(self, workspace_ids: Sequence[str]) -> dict[str, HeldColumns]:
        """Every asked workspace's columns from one read of ``pg_attribute``, joined to the
        registry that numbers the workspaces' tables."""
        asked = [check_workspace_id(workspace_id) for workspace_id in workspace_ids]
        registry = sql.qualified(self.schema, "workspaces")
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT c.relname, w.workspace_id, a.attname,"
                f" format_type(a.atttypid, a.atttypmod) FROM {registry} AS w"
                " JOIN pg_class AS c"
                " ON c.relname IN ('profiles_' || w.number, 'events_' || w.number)"
                " JOIN pg_namespace AS n ON n.oid = c.relnamespace AND n.nspname = %s"
                " JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attnum > 0"
                " AND NOT a.attisdropped"
                " WHERE w.workspace_id = ANY(%s) ORDER BY c.relname, a.attnum",
                [self.schema, asked],
            ).fetchall()
        tables = {row[0]: (row[1], row[0].startswith("events_")) for row in rows}
        columns = [(row[0], row[2], row[3]) for row in rows]
        found = held_columns(tables, columns, sql.ATTRIBUTE_TYPES)
        return {workspace: found.get(workspace, HeldColumns({}, {})) for workspace in asked}

    # Profiles.

    def upsert_profiles(
        self, workspace_id: str, records: Sequence[ProfileRecord], *, strict: bool = False
    ) -> list[UpsertResult]:
        """Merge each record into its profile in one transaction; a record with a bad value
        (or text PostgreSQL cannot hold: NUL) fails alone."""
        state = self._state(workspace_id, create=True)
        assert state is not None
        clean, refused = writes.without_nul(records)
        written: dict[int, Profile] = {}
        plan = WritePlan([], {}, 0)
        for attempt in range(ATTEMPTS):
            try:
                with self._transaction() as conn:
                    conn.execute(f"LOCK TABLE {state.profiles} IN ROW EXCLUSIVE MODE")
                    state.schema = writes.columns(conn, state.profiles, RESERVED_COLUMNS)
                    state.read_at = time.monotonic()
                    plan = plan_writes([records[n] for n in clean], state.schema, strict=strict)
                    written = writes.apply_plan(conn, state, plan) if plan.writes else {}
                break
            except RETRIED:
                if attempt == ATTEMPTS - 1:
                    raise
        return writes.in_order(plan.results(written), clean, refused, len(records))

    def get_profile(self, workspace_id: str, external_id: str) -> Profile | None:
        """One profile by external id."""
        state = self._state(workspace_id)
        if state is None:
            return None
        found = self._profiles(state, "external_id = %s", [external_id])
        return found[0] if found else None

    def get_profiles_by_pid(self, workspace_id: str, pids: Sequence[int]) -> list[Profile | None]:
        """Profiles by pid, in the order asked, None where there is none."""
        state = self._state(workspace_id)
        if state is None:
            return [None] * len(pids)
        found = {p.pid: p for p in self._profiles(state, "pid = ANY(%s)", [_valid_pids(pids)])}
        return [found.get(pid) for pid in pids]

    def delete_profile(self, workspace_id: str, external_id: str) -> int | None:
        """Delete one profile and its events; return its pid (never given out again)."""
        state = self._state(workspace_id)
        if state is None:
            return None
        with self._transaction() as conn:
            query = f"DELETE FROM {state.profiles} WHERE external_id = %s RETURNING pid"
            row = conn.execute(query, [external_id]).fetchone()
            if row is None:
                return None
            conn.execute(f"DELETE FROM {state.events} WHERE pid = %s", [row[0]])
        return int(row[0])

    def pids_for(self, workspace_id: str, external_ids: Sequence[str]) -> list[int | None]:
        """The pid of each external id, in order, None where unknown."""
        state = self._state(workspace_id)
        if state is None or not external_ids:
            return [None] * len(external_ids)
        with self._connection() as conn:
            found = writes.pid_map(conn, state, list(external_ids))
        return [found.get(eid) for eid in external_ids]

    def ensure_profiles(
        self, workspace_id: str, external_ids: Sequence[str]
    ) -> tuple[list[int], int]:
        """The pid of each external id, in order, creating an empty profile for each unknown
        one; and how many were created."""
        state = self._state(workspace_id, create=True)
        assert state is not None
        wanted = list(external_ids)
        with self._transaction() as conn:
            pids, created = writes.ensure(conn, state, wanted)
        return [pids[eid] for eid in wanted], created

    def external_ids_for(self, workspace_id: str, pids: Sequence[int]) -> list[str | None]:
        """The external id of each pid, in order, None where unknown."""
        state = self._state(workspace_id)
        if state is None or not pids:
            return [None] * len(pids)
        query = f"SELECT pid, external_id FROM {state.profiles} WHERE pid = ANY(%s)"
        with self._connection() as conn:
            found = dict(conn.execute(query, [_valid_pids(pids)]).fetchall())
        return [found.get(pid) for pid in pids]

    def count(self, workspace_id: str) -> int:
        """How many profiles the workspace holds."""
        state = self._state(workspace_id)
        if state is None:
            return 0
        with self._connection() as conn:
            row = conn.execute(f"SELECT count(*) FROM {state.profiles}").fetchone()
        return int(row[0]) if row else 0

    # Selects.

    def select_pids(
        self,
        workspace_id: str,
        where_sql: str,
        params: Params = (),
        memberships: Mapping[str, AbstractBitMap] | None = None,
    ) -> BitMap:
        """Run the condition over the workspace's profiles into a bitmap.

        Each member set is copied (binary ``COPY``, from a numpy buffer) into a temporary
        table named by its alias and left-joined by pid; the temporary tables go with the
        transaction.
        """
        state = self._state(workspace_id)
        condition = sql.checked_condition(where_sql)
        sets = {check_membership_alias(alias): bits for alias, bits in (memberships or {}).items()}
        if state is None:
            return BitMap()
        with self._transaction() as conn:
            for alias, members in sets.items():
                stage_members(conn, alias, members)
            return self._select(conn, state, condition, params, list(sets))

    def select_query_pids(
        self, workspace_id: str, select_sql: str, *, timeout_seconds: float | None = None
    ) -> BitMap:
        """Run a member query (checked again here) on the workspace's own tables, in a
        read-only transaction: an integer column is taken as pids, a text one as external ids,
        any other refused; ids of no profile are left out. Past ``timeout_seconds`` PostgreSQL
        cancels it (``statement_timeout``)."""
        query = queries.check_select(select_sql, sql.DIALECT)
        state = self._state(workspace_id)
        if state is None:
            return BitMap()
        tables = {"profiles": state.profiles, "events": state.events}
        pointed = queries.point_at(query, tables, sql.DIALECT)
        with self._transaction() as conn:
            conn.execute("SET TRANSACTION READ ONLY")
            if timeout_seconds is not None:
                milliseconds = max(int(timeout_seconds * 1000), 1)
                conn.execute(f"SET LOCAL statement_timeout = {milliseconds}")
            try:
                with conn.transaction():
                    described = conn.execute(f"SELECT * FROM ({pointed}) AS q LIMIT 0")
                    column = (described.description or [])[0]
                    if column.type_code not in sql.INTEGER_OIDS | sql.TEXT_OIDS:
                        raise queries.wrong_column(_type_name(conn, column.type_code))
                    by_pid = column.type_code in sql.INTEGER_OIDS
                    found = sql.members_of_query(state.profiles, pointed, by_pid)
                    return selected_pids(conn, found, _last_pid(conn, state))
            except pg_errors.QueryCanceled:
                raise Unprocessable(
                    f"the SQL source ran longer than {timeout_seconds:g} s and was stopped",
                    code="engine_query_timeout",
                ) from None
            except psycopg.Error as error:
                if (error.sqlstate or "")[:2] not in QUERY_ERROR_CLASSES:
                    raise
                raise conditions.member_query_refused(
                    error,
                    str(error).splitlines()[0] if str(error) else type(error).__name__,
                    tables,
                ) from None

    def select_many(
        self,
        workspace_id: str,
        predicates: Mapping[K, str],
        params: Mapping[K, Params] | None = None,
    ) -> dict[K, BitMap]:
        """One query per predicate on one connection."""
        state = self._state(workspace_id)
        conditions = {key: sql.checked_condition(text) for key, text in predicates.items()}
        if state is None:
            return {key: BitMap() for key in conditions}
        bound = params or {}
        with self._connection() as conn:
            return {
                key: self._select(conn, state, condition, bound.get(key, ()), [])
                for key, condition in conditions.items()
            }

    # Events.

    def ensure_event_properties(self, workspace_id: str, schema: AttributeSchema) -> None:
        """Add a typed column to the events table per new property."""
        wanted = checked_schema(schema, reserved=RESERVED_EVENT_FIELDS)
        state = self._state(workspace_id, create=True)
        assert state is not None
        with self._transaction() as conn:
            self._lock_workspace(conn, workspace_id)
            current = writes.columns(conn, state.events, RESERVED_EVENT_FIELDS)
            refuse_type_changes(current, wanted)
            for name, kind in wanted.items():
                if name not in current:
                    conn.execute(sql.add_column(state.events, name, kind))
                    current = {**current, name: kind}
        state.event_schema = current

    def event_properties(self, workspace_id: str) -> dict[str, AttributeType]:
        """The declared event properties of a workspace, read from its columns."""
        state = self._state(workspace_id)
        return dict(self._fresh(state).event_schema) if state else {}

    def write_events(
        self,
        workspace_id: str,
        records: Sequence[EventRecord],
        *,
        received_at: datetime | None = None,
        known_new: frozenset[str] = frozenset(),
        dedupe_since: datetime | None = None,
    ) -> list[EventResult]:
        """Check the batch, drop duplicates, then in one transaction create the unknown
        profiles and copy the events in. Every stored id is a duplicate, ``dedupe_since`` or
        not: the unique index on ``event_id`` finds it at the cost of one index probe. A
        concurrent writer of the same event id makes the transaction fail on the unique index;
        it is retried, looking up every id (``known_new`` too), and finds the id stored."""
        state = self._state(workspace_id, create=True)
        assert state is not None
        for attempt in range(ATTEMPTS):
            trusted = known_new if attempt == 0 else frozenset()
            try:
                return self._write_events(state, records, received_at or utcnow(), trusted)
            except RETRIED:
                if attempt == ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def events_of(
        self,
        workspace_id: str,
        pids: Sequence[int],
        *,
        slices: Sequence[EventSlice] | None = None,
    ) -> dict[int, list[Event]]:
        """Each pid's events (in one of ``slices`` when given), oldest first."""
        state = self._state(workspace_id)
        if state is None or not pids or (slices is not None and not slices):
            return {}
        state = self._fresh(state)
        with self._connection() as conn:
            return events_sql.read_of(
                conn, state.events, state.event_schema, _valid_pids(pids), slices
            )

    def pids_with_events_between(
        self, workspace_id: str, ranges: Sequence[tuple[datetime, datetime]]
    ) -> BitMap:
        """The pids with an event timed in one of ``ranges`` (bounds included)."""
        state = self._state(workspace_id)
        if state is None or not ranges:
            return BitMap()
        with self._connection() as conn:
            query = events_sql.pids_between(state.events, ranges, _literal(conn))
            return selected_pids(conn, query, _last_pid(conn, state))

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
        state = self._state(workspace_id)
        if state is None:
            return EventPage([], None)
        state = self._fresh(state)
        with self._connection() as conn:
            return events_sql.read_page(
                conn, state.events, state.event_schema, pid, limit=limit, after=after, names=names
            )

    def drop_events_before(self, workspace_id: str, before: datetime) -> int:
        """Delete the workspace's events older than ``before``; how many were deleted."""
        state = self._state(workspace_id)
        if state is None:
            return 0
        with self._connection() as conn:
            cur = conn.execute(f'DELETE FROM {state.events} WHERE "timestamp" < %s', [before])
            return cur.rowcount

    # Moving a workspace (base.Portable): exact pids, events in copy order, idempotent imports.

    def last_pid(self, workspace_id: str) -> int:
        """The highest pid the workspace ever gave out, 0 if none."""
        state = self._state(workspace_id)
        if state is None:
            return 0
        with self._connection() as conn:
            row = conn.execute(sql.last_pid(state.sequence)).fetchone()
        return int(row[0]) if row else 0

    def reserve_pids(self, workspace_id: str, through: int) -> None:
        """Make new profiles get pids above ``through`` (the sequence never goes back)."""
        state = self._state(workspace_id, create=True)
        assert state is not None
        with self._transaction() as conn:
            self._reserve(conn, state, through)

    def export_profiles(self, workspace_id: str, *, after_pid: int, limit: int) -> list[Profile]:
        """Up to ``limit`` profiles with a pid above ``after_pid``, by pid."""
        state = self._state(workspace_id)
        if state is None:
            return []
        return self._profiles(state, "pid > %s ORDER BY pid LIMIT %s", [after_pid, limit])

    def import_profiles(self, workspace_id: str, profiles: Sequence[Profile]) -> int:
        """Copy the profiles in whole (pids given) in one transaction, those stored already
        left alone, and move the pid sequence past them."""
        state = self._state(workspace_id, create=True)
        assert state is not None
        with self._transaction() as conn:
            conn.execute(f"LOCK TABLE {state.profiles} IN SHARE ROW EXCLUSIVE MODE")
            state.schema = writes.columns(conn, state.profiles, RESERVED_COLUMNS)
            names = list(state.schema)
            rows = [portable.profile_row(p, state.schema) for p in profiles]
            copy_rows(conn, state.profiles, "_audiences_moved", rows, names)
            written = conn.execute(sql.insert_moved(state.profiles, "_audiences_moved")).rowcount
            if profiles:
                self._reserve(conn, state, max(p.pid for p in profiles))
        return max(written, 0)

    def count_events(self, workspace_id: str) -> int:
        """How many events the workspace holds."""
        state = self._state(workspace_id)
        if state is None:
            return 0
        with self._connection() as conn:
            row = conn.execute(f"SELECT count(*) FROM {state.events}").fetchone()
        return int(row[0]) if row else 0

    def count_event_ids(self, workspace_id: str) -> int:
        """How many distinct ``event_id``s the workspace's events hold (unique: the rows with
        one)."""
        state = self._state(workspace_id)
        if state is None:
            return 0
        with self._connection() as conn:
            row = conn.execute(f"SELECT count(event_id) FROM {state.events}").fetchone()
        return int(row[0]) if row else 0

    def export_events(
        self, workspace_id: str, *, after: EventCursor | None, limit: int
    ) -> tuple[list[MovedEvent], EventCursor | None]:
        """Up to ``limit`` events after ``after`` in copy order, and the cursor after them."""
        state = self._state(workspace_id)
        if state is None:
            return [], None
        schema = self._fresh(state).event_schema
        start, skip = (after.pid, after.count) if after else (0, 0)
        with self._connection() as conn:
            query = sql.export_events(state.events, schema)
            rows = conn.execute(query, {"start": start, "skip": skip, "limit": limit}).fetchall()
        read = EventReader(schema)
        events = [(int(row[0]), read(row)) for row in rows]
        return events, portable.cursor_after(events, after) if events else None

    def import_events(
        self, workspace_id: str, events: Sequence[MovedEvent], *, after: EventCursor | None
    ) -> int:
        """Copy in the events of a batch the table does not hold yet, in one transaction; an
        ``event_id`` goes to its first copy (by ``received_at``), the others arrive without it
        (``portable.first_copies_keep_ids``)."""
        state = self._state(workspace_id, create=True)
        assert state is not None
        with self._transaction() as conn:
            conn.execute(f"LOCK TABLE {state.events} IN SHARE ROW EXCLUSIVE MODE")
            schema = writes.columns(conn, state.events, RESERVED_EVENT_FIELDS)
            state.event_schema = schema
            row = conn.execute(sql.last_event_cursor(state.events)).fetchone()
            held = EventCursor(int(row[0]), int(row[1])) if row else None
            fresh = portable.left_to_write(events, after, held)
            # The unique index on event_id: a later copy of an id arrives without it.
            ids = sorted({e.event_id for _, e in fresh if e.event_id is not None})
            stored = events_sql.receipts_of_ids(conn, state.events, ids)
            fresh, taken = portable.first_copies_keep_ids(fresh, stored)
            events_sql.clear_ids(conn, state.events, taken)
            columns = ", ".join(
                [*map(sql.quote, events_sql.EVENT_COLUMNS), *map(sql.quote, schema)]
            )
            with conn.cursor().copy(f"COPY {state.events} ({columns}) FROM STDIN") as copy:
                for moved in fresh:
                    copy.write_row(portable.event_row(moved, schema))
        return len(fresh)

    def ping(self) -> None:
        """Return when PostgreSQL answers a query; ``engine_unavailable`` otherwise."""
        with self._connection() as conn:
            conn.execute("SELECT 1")

    def close(self) -> None:
        """Close the pool's connections; calls after this fail."""
        self._pool.close()

    # Internals: connections, workspace state, writes.

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        """A pooled connection (autocommit), its failures as our errors."""
        try:
            with self._pool.connection() as conn:
                yield conn
        except PoolTimeout:
            raise unavailable("no free connection") from None
        except psycopg.OperationalError as error:
            if isinstance(error, pg_errors.QueryCanceled | pg_errors.LockNotAvailable):
                raise
            raise unavailable(str(error).strip()) from None

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        with self._connection() as conn, conn.transaction():
            yield conn

    def _state(self, workspace_id: str, *, create: bool = False) -> Workspace | None:
        check_workspace_id(workspace_id)
        state = self._workspaces.get(workspace_id)
        if state is None:
            state = self._load(workspace_id, create)
            if state is not None:
                self._workspaces[workspace_id] = state
        return state

    def _load(self, workspace_id: str, create: bool) -> Workspace | None:
        registry = sql.qualified(self.schema, "workspaces")
        lookup = f"SELECT number FROM {registry} WHERE workspace_id = %s"
        with self._transaction() as conn:
            row = conn.execute(lookup, [workspace_id]).fetchone()
            if row is None and not create:
                return None
            if row is None:
                self._lock_workspace(conn, workspace_id)
                conn.execute(
                    f"INSERT INTO {registry} (workspace_id) VALUES (%s) ON CONFLICT DO NOTHING",
                    [workspace_id],
                )
                row = conn.execute(lookup, [workspace_id]).fetchone()
            assert row is not None
            number = int(row[0])
            state = Workspace(
                number,
                sql.qualified(self.schema, f"profiles_{number}"),
                sql.qualified(self.schema, f"events_{number}"),
                sql.qualified(self.schema, f"pids_{number}"),
            )
            if create:
                for statement in sql.create_storage(
                    state.profiles, state.events, state.sequence, number
                ):
                    conn.execute(statement)
            self._read_schemas(conn, state)
        return state

    def _fresh(self, state: Workspace) -> Workspace:
        """The state with columns read in the last :data:`SCHEMA_TTL` seconds."""
        if time.monotonic() - state.read_at > SCHEMA_TTL:
            with self._connection() as conn:
                self._read_schemas(conn, state)
        return state

    def _read_schemas(self, conn: Connection, state: Workspace) -> None:
        state.schema = writes.columns(conn, state.profiles, RESERVED_COLUMNS)
        state.event_schema = writes.columns(conn, state.events, RESERVED_EVENT_FIELDS)
        state.read_at = time.monotonic()

    def _reserve(self, conn: Connection, state: Workspace, through: int) -> None:
        """Move the pid sequence past ``through`` unless it is there already."""
        row = conn.execute(sql.last_pid(state.sequence)).fetchone()
        if through > (int(row[0]) if row else 0):
            conn.execute("SELECT setval(%s, %s)", [state.sequence, through])

    def _lock_workspace(self, conn: Connection, workspace_id: str) -> None:
        """Serialise schema changes of one workspace across processes (until commit)."""
        key = f"audiences:{self.schema}:{workspace_id}"
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [key])

    def _profiles(self, state: Workspace, where: str, params: list[Any]) -> list[Profile]:
        schema = self._fresh(state).schema
        query = f"SELECT {sql.select_columns(schema)} FROM {state.profiles} WHERE {where}"
        with self._connection() as conn:
            rows = conn.execute(query, params).fetchall()
        read = ProfileReader(schema)
        return [read(row) for row in rows]

    def _write_events(
        self,
        state: Workspace,
        records: Sequence[EventRecord],
        received_at: datetime,
        known_new: frozenset[str],
    ) -> list[EventResult]:
        with self._transaction() as conn:
            conn.execute(f"LOCK TABLE {state.events} IN ROW EXCLUSIVE MODE")
            state.event_schema = writes.columns(conn, state.events, RESERVED_EVENT_FIELDS)
            passed, refused = check_events(records, state.event_schema)
            passed, more = writes.events_without_nul(passed)
            ids = ids_to_check(passed, known_new)
            stored = events_sql.stored_event_ids(conn, state.events, ids)
            fresh, duplicates = split_duplicates(passed, stored)
            external = external_ids(fresh, duplicates)
            pids = writes.ensure(conn, state, external)[0] if external else {}
            if fresh:
                events_sql.insert(conn, state.events, state.event_schema, fresh, pids, received_at)
        return batch_results(len(records), {**refused, **more}, fresh, duplicates, pids)

    def _select(
        self,
        conn: Connection,
        state: Workspace,
        condition: str,
        params: Params,
        aliases: Sequence[str],
    ) -> BitMap:
        if params:
            condition = sql.bind_parameters(condition, params, _literal(conn))
        query = sql.pid_query(
            state.profiles,
            state.events,
            condition,
            aliases,
            reads_events=sql.reads_events(condition),
        )
        try:
            with conn.transaction():  # a failed query leaves the outer transaction usable
                return selected_pids(conn, query, _last_pid(conn, state))
        except psycopg.Error as error:
            if (error.sqlstate or "")[:2] not in QUERY_ERROR_CLASSES:
                raise
            raise conditions.condition_refused(error, _reason(error)) from None


def unavailable(reason: str) -> ServiceUnavailable:
    """The error for a PostgreSQL profile engine that cannot be reached."""
    return ServiceUnavailable(
        f"The PostgreSQL profile engine is unavailable: {reason}", code="engine_unavailable"
    )


def _configure(conn: Connection) -> None:
    """Parse JSON with orjson (what every other reader of profiles uses)."""
    set_json_loads(orjson.loads, conn)


def _last_pid(conn: Connection, state: Workspace) -> int:
    """The largest pid drawn so far (bounds how many pids a select can return)."""
    row = conn.execute(f"SELECT last_value FROM {state.sequence}").fetchone()
    return int(row[0]) if row else 0


def _literal(conn: Connection) -> Callable[[object], str]:
    """Writes a value as an SQL literal with psycopg's quoting for this connection."""
    return lambda value: pg_sql.Literal(value).as_string(conn)


QUERY_FAILURES: tuple[tuple[type[Exception], str], ...] = (
    (pg_errors.InvalidTextRepresentation, "a value cannot be converted to the type the rule needs"),
    (pg_errors.NumericValueOutOfRange, "a computed number is out of range"),
    (pg_errors.DatetimeFieldOverflow, "a computed time is out of range"),
)


def _reason(error: Exception) -> str:
    return next(
        (words for kind, words in QUERY_FAILURES if isinstance(error, kind)), conditions.CANNOT_RUN
    )


def _valid_pids(pids: Sequence[int]) -> list[int]:
    return [pid for pid in pids if 0 < pid <= sql.MAX_PID]


def _type_name(conn: Connection, oid: int) -> str:
    """A type's name as PostgreSQL writes it (``double precision``), for an error message."""
    row = conn.execute("SELECT format_type(%s, NULL)", (oid,)).fetchone()
    return str(row[0]) if row is not None else f"oid {oid}"
