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
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import numpy as np
import orjson
import psycopg
from psycopg import errors as pg_errors
from psycopg import sql as pg_sql
from psycopg.types.json import set_json_loads
from psycopg_pool import ConnectionPool, PoolTimeout
from pyroaring import AbstractBitMap, BitMap

from audiences.engines import postgres_events as events_sql
from audiences.engines import postgres_sql as sql
from audiences.engines.base import (
    RESERVED_COLUMNS,
    EventPage,
    EventPosition,
    EventRecord,
    EventResult,
    Params,
    Profile,
    ProfileRecord,
    UpsertResult,
    check_membership_alias,
    check_workspace_id,
    pids_to_bitmap,
)
from audiences.engines.event_writes import check_events, split_duplicates
from audiences.engines.rows import ProfileReader
from audiences.engines.schema import checked_schema, extra_moves, refuse_type_changes
from audiences.engines.writes import Write, WritePlan, merge_row, plan_writes
from audiences.errors import Conflict, ErrorDetail, ServiceUnavailable, Unprocessable
from audiences.kit.clock import utcnow
from audiences.schemas.attributes import AttributeType
from audiences.schemas.common import reject_nul
from audiences.schemas.events import RESERVED_EVENT_FIELDS, Event

K = TypeVar("K")
Connection = psycopg.Connection[Any]

log = logging.getLogger("audiences.engines")

SCHEMA_TTL = 2.0
"""Seconds a process trusts the columns it read before reading them again: another process
may declare an attribute. Writes always read them under the table's lock."""

ATTEMPTS = 5
"""Tries of a write transaction that lost a race (a deadlock, a concurrent duplicate)."""

RETRIED = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure, pg_errors.UniqueViolation)

QUERY_ERROR_CLASSES = ("22", "42")
"""SQLSTATE classes that mean the WHERE-SQL cannot run on this data, not that the engine broke
(22: a value that cannot be converted, a number out of range; 42: an unknown column or
function, a type mismatch)."""

COPY_HEADER = 19
"""Bytes before the first row of ``COPY ... (FORMAT binary)``: signature, flags, extension
length (PostgreSQL writes no extension)."""

PID_ROWS = np.dtype([("fields", ">i2"), ("length", ">i4"), ("pid", ">i8")])
"""One row of a binary COPY of one bigint column."""


@dataclass
class _Workspace:
    """What the engine keeps about one workspace; schemas are replaced, never mutated."""

    number: int
    profiles: str
    events: str
    sequence: str
    schema: dict[str, AttributeType] = field(default_factory=dict)
    event_schema: dict[str, AttributeType] = field(default_factory=dict)
    read_at: float = 0.0


class PostgresEngine:
    """Profiles and events in PostgreSQL, through a small pool of connections; safe to share
    between threads, and between processes (each with its own engine)."""

    def __init__(
        self,
        url: str,
        *,
        schema: str = "audiences_profiles",
        pool_size: int = 4,
        connect_timeout: float = 10.0,
    ) -> None:
        self.schema = sql.checked_schema_name(schema)
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max(pool_size, 1),
            kwargs={"autocommit": True, "options": "-c TimeZone=UTC"},
            configure=_configure,
            open=False,
            name="audiences-profiles",
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout)
        except PoolTimeout:
            self._pool.close()
            raise unavailable(f"no connection within {connect_timeout:g} s") from None
        self._workspaces: dict[str, _Workspace] = {}
        with self._transaction() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"audiences:{schema}"])
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {sql.quote(schema)}")
            conn.execute(sql.registry(schema))

    @property
    def dialect(self) -> str:
        """WHERE-SQL for this engine is compiled by sqlglot's ``postgres`` dialect."""
        return sql.DIALECT

    # Attributes.

    def ensure_attributes(self, workspace_id: str, schema: Mapping[str, Any]) -> None:
        """Add a typed column per new attribute and move matching ``extra`` values into it,
        in one transaction holding the workspace's lock."""
        wanted = checked_schema(schema)
        state = self._state(workspace_id, create=True)
        assert state is not None
        with self._transaction() as conn:
            self._lock_workspace(conn, workspace_id)
            current = self._columns(conn, state.profiles, RESERVED_COLUMNS)
            refuse_type_changes(current, wanted)
            for name, kind in wanted.items():
                if name not in current:
                    conn.execute(sql.add_column(state.profiles, name, kind))
                    self._backfill(conn, state, name, kind)
                    current = {**current, name: kind}
        state.schema, state.read_at = current, time.monotonic()

    def attributes(self, workspace_id: str) -> dict[str, AttributeType]:
        """The declared attributes of a workspace, read from its columns."""
        state = self._state(workspace_id)
        return dict(self._fresh(state).schema) if state else {}

    # Profiles.

    def upsert_profiles(
        self, workspace_id: str, records: Sequence[ProfileRecord], *, strict: bool = False
    ) -> list[UpsertResult]:
        """Merge each record into its profile in one transaction; a record with a bad value
        (or text PostgreSQL cannot hold: NUL) fails alone."""
        state = self._state(workspace_id, create=True)
        assert state is not None
        clean, refused = _without_nul(records)
        written: dict[int, Profile] = {}
        plan = WritePlan([], {}, 0)
        for attempt in range(ATTEMPTS):
            try:
                with self._transaction() as conn:
                    conn.execute(f"LOCK TABLE {state.profiles} IN ROW EXCLUSIVE MODE")
                    state.schema = self._columns(conn, state.profiles, RESERVED_COLUMNS)
                    state.read_at = time.monotonic()
                    plan = plan_writes([records[n] for n in clean], state.schema, strict=strict)
                    written = self._apply(conn, state, plan) if plan.writes else {}
                break
            except RETRIED:
                if attempt == ATTEMPTS - 1:
                    raise
        return _in_order(plan.results(written), clean, refused, len(records))

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
            found = _pid_map(conn, state, list(external_ids))
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
            pids, created = self._ensure(conn, state, wanted)
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
                _stage_members(conn, alias, members)
            return self._select(conn, state, condition, params, list(sets))

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

    def ensure_event_properties(self, workspace_id: str, schema: Mapping[str, Any]) -> None:
        """Add a typed column to the events table per new property."""
        wanted = checked_schema(schema, reserved=RESERVED_EVENT_FIELDS)
        state = self._state(workspace_id, create=True)
        assert state is not None
        with self._transaction() as conn:
            self._lock_workspace(conn, workspace_id)
            current = self._columns(conn, state.events, RESERVED_EVENT_FIELDS)
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
    ) -> list[EventResult]:
        """Check the batch, drop duplicates, then in one transaction create the unknown
        profiles and copy the events in. A concurrent writer of the same event id makes the
        transaction fail on the unique index; it is retried and finds the id stored."""
        state = self._state(workspace_id, create=True)
        assert state is not None
        for attempt in range(ATTEMPTS):
            try:
                return self._write_events(state, records, received_at or utcnow())
            except RETRIED:
                if attempt == ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def events_of(
        self, workspace_id: str, pids: Sequence[int], *, since: datetime | None = None
    ) -> dict[int, list[Event]]:
        """Each pid's events (at or after ``since``), oldest first."""
        state = self._state(workspace_id)
        if state is None or not pids:
            return {}
        state = self._fresh(state)
        with self._connection() as conn:
            return events_sql.read_of(
                conn, state.events, state.event_schema, _valid_pids(pids), since
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
            return _copy_pids(conn, query)

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

    def _state(self, workspace_id: str, *, create: bool = False) -> _Workspace | None:
        check_workspace_id(workspace_id)
        state = self._workspaces.get(workspace_id)
        if state is None:
            state = self._load(workspace_id, create)
            if state is not None:
                self._workspaces[workspace_id] = state
        return state

    def _load(self, workspace_id: str, create: bool) -> _Workspace | None:
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
            state = _Workspace(
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

    def _fresh(self, state: _Workspace) -> _Workspace:
        """The state with columns read in the last :data:`SCHEMA_TTL` seconds."""
        if time.monotonic() - state.read_at > SCHEMA_TTL:
            with self._connection() as conn:
                self._read_schemas(conn, state)
        return state

    def _read_schemas(self, conn: Connection, state: _Workspace) -> None:
        state.schema = self._columns(conn, state.profiles, RESERVED_COLUMNS)
        state.event_schema = self._columns(conn, state.events, RESERVED_EVENT_FIELDS)
        state.read_at = time.monotonic()

    @staticmethod
    def _columns(
        conn: Connection, table: str, reserved: frozenset[str]
    ) -> dict[str, AttributeType]:
        rows = conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped"
            " ORDER BY attnum",
            [table],
        ).fetchall()
        return {name: sql.ATTRIBUTE_TYPES[kind] for name, kind in rows if name not in reserved}

    def _lock_workspace(self, conn: Connection, workspace_id: str) -> None:
        """Serialise schema changes of one workspace across processes (until commit)."""
        key = f"audiences:{self.schema}:{workspace_id}"
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [key])

    def _profiles(self, state: _Workspace, where: str, params: list[Any]) -> list[Profile]:
        schema = self._fresh(state).schema
        query = f"SELECT {sql.select_columns(schema)} FROM {state.profiles} WHERE {where}"
        with self._connection() as conn:
            rows = conn.execute(query, params).fetchall()
        read = ProfileReader(schema)
        return [read(row) for row in rows]

    def _apply(self, conn: Connection, state: _Workspace, plan: WritePlan) -> dict[int, Profile]:
        """Write a checked plan: lock the stored rows in pid order, insert the new ids (a
        racing writer's id becomes one to merge into), merge the rest over what is stored.
        The profiles as written, by pid."""
        schema, names = state.schema, list(state.schema)
        by_id = {write.external_id: write for write in plan.writes}
        old = _locked_rows(conn, state, list(by_id))
        now = utcnow()
        new = [write for write in plan.writes if write.external_id not in old]
        if new:
            created = self._insert_new(conn, state, new, names, now)
            raced = [w.external_id for w in new if w.external_id not in created]
            old.update(_locked_rows(conn, state, raced))
            for write in new:
                if write.external_id in created:
                    write.pid, write.created = created[write.external_id], True
        merged: list[tuple[Any, ...]] = []
        for write in plan.writes:
            if not write.created:
                write.pid = int(old[write.external_id][0])
                merged.append(merge_row(write, old[write.external_id], names, now))
        if merged:
            _copy_rows(conn, state.profiles, "_audiences_merged", merged, names)
            conn.execute(sql.update_from(state.profiles, "_audiences_merged", names))
        read = ProfileReader(schema)
        rows = merged + [merge_row(w, None, names, now) for w in plan.writes if w.created]
        return {row[0]: read(row) for row in rows}

    def _insert_new(
        self, conn: Connection, state: _Workspace, new: list[Write], names: list[str], now: datetime
    ) -> dict[str, int]:
        """Insert new profiles whole, in batch order; the pid of each id this call created."""
        rows = [merge_row(write, None, names, now) for write in new]
        staged = [(n, *row[1:]) for n, row in enumerate(rows)]  # the pid column holds the order
        _copy_rows(conn, state.profiles, "_audiences_new", staged, names)
        query = sql.insert_new(state.profiles, "_audiences_new", _sequence_name(state), names)
        return {eid: int(pid) for eid, pid in _run_numbered(conn, query)}

    def _ensure(
        self, conn: Connection, state: _Workspace, external_ids: list[str]
    ) -> tuple[dict[str, int], int]:
        """The pid of each id, inserting an empty profile for the unknown ones (a racing
        writer's insert is read back); and how many this call created."""
        pids = _pid_map(conn, state, external_ids)
        fresh = [eid for eid in dict.fromkeys(external_ids) if eid not in pids]
        if not fresh:
            return pids, 0
        query = sql.insert_empty(state.profiles, _sequence_name(state))
        made = dict(_run_numbered(conn, query, [utcnow(), fresh]))
        pids.update(made)
        missing = [eid for eid in fresh if eid not in made]
        if missing:
            pids.update(_pid_map(conn, state, missing))
        return pids, len(made)

    def _write_events(
        self, state: _Workspace, records: Sequence[EventRecord], received_at: datetime
    ) -> list[EventResult]:
        results: list[EventResult | None] = [None] * len(records)
        with self._transaction() as conn:
            conn.execute(f"LOCK TABLE {state.events} IN ROW EXCLUSIVE MODE")
            state.event_schema = self._columns(conn, state.events, RESERVED_EVENT_FIELDS)
            passed, refused = check_events(records, state.event_schema)
            passed, more = _events_without_nul(passed)
            for position, result in [*refused.items(), *more.items()]:
                results[position] = result
            ids = [e.event_id for e in passed if e.event_id is not None]
            stored = events_sql.stored_event_ids(conn, state.events, ids)
            fresh, duplicates = split_duplicates(passed, stored)
            external = list(dict.fromkeys(e.external_id for e in [*fresh, *duplicates]))
            pids = self._ensure(conn, state, external)[0] if external else {}
            if fresh:
                events_sql.insert(conn, state.events, state.event_schema, fresh, pids, received_at)
        for event in fresh:
            results[event.position] = EventResult(event.external_id, pids[event.external_id])
        for event in duplicates:
            pid = pids[event.external_id]
            results[event.position] = EventResult(event.external_id, pid, duplicate=True)
        return [result for result in results if result is not None]

    def _backfill(
        self, conn: Connection, state: _Workspace, name: str, kind: AttributeType
    ) -> None:
        """Move the ``extra`` values a new column can hold into it (nested or dotted)."""
        nested = name.split(".")
        query = (
            f"SELECT pid, extra::text FROM {state.profiles}"
            " WHERE extra ? %s OR (cardinality(%s::text[]) > 1 AND extra #> %s::text[] IS NOT NULL)"
        )
        rows = conn.execute(query, [name, nested, nested]).fetchall()
        moves = extra_moves(rows, name, kind)
        if not moves:
            return
        staged = "_audiences_moves"
        conn.execute(
            f"CREATE TEMP TABLE {staged} (pid bigint, v {sql.COLUMN_TYPES[kind]}, e jsonb)"
            " ON COMMIT DROP"
        )
        with conn.cursor().copy(f"COPY {staged} (pid, v, e) FROM STDIN") as copy:
            for move in moves:
                copy.write_row(move)
        conn.execute(
            f"UPDATE {state.profiles} AS t SET {sql.quote(name)} = s.v, extra = s.e"
            f" FROM {staged} AS s WHERE t.pid = s.pid"
        )
        conn.execute(f"DROP TABLE {staged}")

    def _select(
        self,
        conn: Connection,
        state: _Workspace,
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
                return _copy_pids(conn, query)
        except psycopg.Error as error:
            if (error.sqlstate or "")[:2] not in QUERY_ERROR_CLASSES:
                raise
            raise _query_failed(error) from None


def unavailable(reason: str) -> ServiceUnavailable:
    """The error for a PostgreSQL profile engine that cannot be reached."""
    return ServiceUnavailable(
        f"The PostgreSQL profile engine is unavailable: {reason}", code="engine_unavailable"
    )


def _configure(conn: Connection) -> None:
    """Parse JSON with orjson (what every other reader of profiles uses)."""
    set_json_loads(orjson.loads, conn)


def _sequence_name(state: _Workspace) -> str:
    return state.sequence


def _literal(conn: Connection) -> Callable[[object], str]:
    """Writes a value as an SQL literal with psycopg's quoting for this connection."""
    return lambda value: pg_sql.Literal(value).as_string(conn)


def _run_numbered(conn: Connection, query: str, params: Sequence[Any] | None = None) -> list[Any]:
    """Run an insert that draws pids, with the sequence's end as our error."""
    try:
        with conn.transaction():
            return conn.execute(query, params).fetchall()
    except pg_errors.SequenceGeneratorLimitExceeded:
        raise Conflict("This workspace has used every pid.", code="pids_exhausted") from None


def _pid_map(conn: Connection, state: _Workspace, external_ids: list[str]) -> dict[str, int]:
    query = f"SELECT external_id, pid FROM {state.profiles} WHERE external_id = ANY(%s)"
    return {eid: int(pid) for eid, pid in conn.execute(query, [external_ids]).fetchall()}


def _locked_rows(
    conn: Connection, state: _Workspace, external_ids: list[str]
) -> dict[str, tuple[Any, ...]]:
    """The stored rows of ``external_ids`` (in :func:`sql.select_columns` order), locked in pid
    order, so that two writers of overlapping batches queue instead of deadlocking."""
    if not external_ids:
        return {}
    query = (
        f"SELECT {sql.select_columns(state.schema)} FROM {state.profiles}"
        " WHERE external_id = ANY(%s) ORDER BY pid FOR UPDATE"
    )
    return {row[1]: row for row in conn.execute(query, [external_ids]).fetchall()}


def _copy_rows(
    conn: Connection, table: str, staged: str, rows: list[tuple[Any, ...]], names: list[str]
) -> None:
    """Copy merged rows into a temporary table shaped like ``table`` (gone at commit)."""
    conn.execute(f"DROP TABLE IF EXISTS {staged}")
    conn.execute(f"CREATE TEMP TABLE {staged} (LIKE {table}) ON COMMIT DROP")
    with conn.cursor().copy(f"COPY {staged} ({sql.write_columns(names)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def _stage_members(conn: Connection, alias: str, members: AbstractBitMap) -> None:
    """A temporary table of pids named ``alias``, written as binary COPY from a numpy buffer."""
    conn.execute(f"CREATE TEMP TABLE {sql.quote(alias)} (pid bigint) ON COMMIT DROP")
    pids = np.asarray(members.to_array(), dtype=np.int64)
    rows = np.empty(len(pids), dtype=PID_ROWS)
    rows["fields"], rows["length"], rows["pid"] = 1, 8, pids
    header = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
    with conn.cursor().copy(f"COPY {sql.quote(alias)} (pid) FROM STDIN (FORMAT binary)") as copy:
        copy.write(header + rows.tobytes() + b"\xff\xff")
    conn.execute(f"ANALYZE {sql.quote(alias)}")


def _copy_pids(conn: Connection, query: str) -> BitMap:
    """The pids a query selects (one bigint column), read as binary COPY into a bitmap."""
    chunks: list[bytes] = []
    with conn.cursor().copy(f"COPY ({query}) TO STDOUT (FORMAT binary)") as copy:
        chunks.extend(bytes(block) for block in copy)
    data = b"".join(chunks)
    body = data[COPY_HEADER:-2] if len(data) > COPY_HEADER + 2 else b""
    return pids_to_bitmap(np.frombuffer(body, dtype=PID_ROWS)["pid"])


def _without_nul(records: Sequence[ProfileRecord]) -> tuple[list[int], dict[int, UpsertResult]]:
    """The positions of the records PostgreSQL can store, and a refusal for each other one:
    text holding NUL, which no PostgreSQL text or JSON value can hold."""
    clean: list[int] = []
    refused: dict[int, UpsertResult] = {}
    for position, (external_id, attributes) in enumerate(records):
        try:
            reject_nul([external_id, attributes])
        except (ValueError, TypeError):
            problem = ErrorDetail("text_invalid", "text may not contain NUL characters", ())
            refused[position] = UpsertResult(str(external_id), None, errors=(problem,))
        else:
            clean.append(position)
    return clean, refused


def _events_without_nul(events: list[Any]) -> tuple[list[Any], dict[int, EventResult]]:
    kept: list[Any] = []
    refused: dict[int, EventResult] = {}
    for event in events:
        try:
            reject_nul([event.external_id, event.name, event.event_id, event.values])
        except (ValueError, TypeError):
            problem = ErrorDetail("text_invalid", "text may not contain NUL characters", ())
            refused[event.position] = EventResult(event.external_id, None, errors=(problem,))
        else:
            kept.append(event)
    return kept, refused


def _in_order(
    results: list[UpsertResult], clean: list[int], refused: dict[int, UpsertResult], size: int
) -> list[UpsertResult]:
    """The results of the clean records (in their order) and the refusals, in input order."""
    out: list[UpsertResult | None] = [None] * size
    for position, result in zip(clean, results, strict=True):
        out[position] = result
    for position, result in refused.items():
        out[position] = result
    return [result for result in out if result is not None]


QUERY_FAILURES: tuple[tuple[type[Exception], str], ...] = (
    (pg_errors.InvalidTextRepresentation, "a value cannot be converted to the type the rule needs"),
    (pg_errors.NumericValueOutOfRange, "a computed number is out of range"),
    (pg_errors.DatetimeFieldOverflow, "a computed time is out of range"),
)


def _query_failed(error: Exception) -> Unprocessable:
    """Our error for a condition PostgreSQL could not run: what went wrong in words, never the
    engine's message (it quotes the generated SQL and table names); that goes to the log."""
    log.warning("profile engine refused a condition: %s", error)
    reason = next(
        (words for kind, words in QUERY_FAILURES if isinstance(error, kind)),
        "the profile engine cannot run it",
    )
    return Unprocessable(
        f"the rule cannot be evaluated on this workspace's profiles: {reason}",
        code="engine_query_failed",
    )


def _valid_pids(pids: Sequence[int]) -> list[int]:
    return [pid for pid in pids if 0 < pid <= sql.MAX_PID]
