"""The profile engine contract: where profile data lives and where rules run as SQL.

An engine is a thin adapter. It stores profiles (an external id, typed attribute columns, a JSON
``extra`` column for undeclared attributes), assigns each profile a dense integer ``pid``, and runs
WHERE-SQL strings compiled by ``audiences.rules`` for its dialect, returning member pids as Roaring
bitmaps. It knows nothing of audiences, rules or HTTP.
"""

from __future__ import annotations

import array
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple, Protocol, TypeVar, runtime_checkable

import numpy as np
import numpy.typing as npt
from pyroaring import AbstractBitMap, BitMap

from audiences.errors import ErrorDetail, InvalidParameter
from audiences.schemas.attributes import AttributeSchema, AttributeType
from audiences.schemas.events import NO_PROPERTIES, Event

K = TypeVar("K")

WORKSPACE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""What a workspace id may look like; engines derive table names from it."""

MEMBERSHIP_ALIAS = re.compile(r"^m_[a-z0-9_]{1,60}$")
"""What the alias of a member set passed to ``select_pids`` must look like."""

RESERVED_COLUMNS = frozenset({"pid", "external_id", "extra", "updated_at"})
"""Column names every profile table has; no attribute may be declared with one of them."""


ProfileRecord = tuple[str, Mapping[str, Any]]
"""One write: the external id and the attributes to merge into the stored profile."""

Params = Sequence[object] | Mapping[str, object]
"""Parameters bound to a WHERE-SQL string: positional (``?``) in a sequence, or named
(``$now``) in a mapping."""


@dataclass(frozen=True)
class Profile:
    """One stored profile: declared and undeclared attributes in one dict, unset ones left out."""

    pid: int
    external_id: str
    attributes: dict[str, Any]
    updated_at: datetime


@dataclass(frozen=True)
class UpsertResult:
    """The outcome of one record of a batch: its pid, or the errors that kept it from being written.

    ``created`` is true when this record made a new profile. A record with ``errors`` was not
    written at all (no partial writes of one record); the rest of its batch was. ``profile`` is
    the stored profile as the write left it, when the engine returns it (streaming evaluation
    then need not read it back).
    """

    external_id: str
    pid: int | None
    created: bool = False
    errors: tuple[ErrorDetail, ...] = field(default=())
    profile: Profile | None = None

    @property
    def ok(self) -> bool:
        """Whether the record was written."""
        return not self.errors


class EventRecord(NamedTuple):
    """One event to write: whose (the external id), what (``name``), when (aware, any zone),
    its properties (nested objects are read as dotted names) and an optional client id that
    makes a retried write idempotent. Records and results are named tuples, as events are
    (``schemas.events.Event``): a 10,000-event write makes 10,000 of each."""

    external_id: str
    name: str
    timestamp: datetime
    properties: Mapping[str, Any] = NO_PROPERTIES
    event_id: str | None = None


class EventResult(NamedTuple):
    """The outcome of one event of a batch: written (its profile's ``pid``), a ``duplicate``
    (its ``event_id`` is stored already, or came earlier in the batch; nothing written), or
    refused with ``errors`` (nothing written, no profile created)."""

    external_id: str
    pid: int | None
    duplicate: bool = False
    errors: tuple[ErrorDetail, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether the event is stored (now, or already as a duplicate)."""
        return not self.errors


@dataclass(frozen=True)
class StoredEvent:
    """One stored event as a profile's history shows it: :class:`Event` and its stored ids."""

    event: Event
    event_id: str | None
    received_at: datetime


class EventSlice(NamedTuple):
    """Some of a profile's events: those named in ``names`` (any name when None), timed at or
    after ``since`` (any time when None). Streaming reads only the slices its rules can read."""

    names: tuple[str, ...] | None
    since: datetime | None


def slices_condition(
    slices: Sequence[EventSlice],
    names: Callable[[tuple[str, ...]], str],
    since: Callable[[datetime], str],
) -> str:
    """The SQL condition of being in one of ``slices``, in an engine's own terms: ``names``
    gives its test that the event's name is one of those, ``since`` its test of the time.

    >>> slices_condition([EventSlice(("a",), None), EventSlice(None, None)], repr, str)
    "((('a',)) OR (TRUE))"
    """
    tests = []
    for slice_ in slices:
        parts = [] if slice_.names is None else [names(slice_.names)]
        parts += [] if slice_.since is None else [since(slice_.since)]
        tests.append(f"({' AND '.join(parts) or 'TRUE'})")
    return f"({' OR '.join(tests) or 'FALSE'})"


@dataclass(frozen=True)
class EventPosition:
    """Where a page of a profile's events (newest first) stopped: the time of its last event
    and how many events of exactly that time it already gave."""

    timestamp: datetime
    skip: int


@dataclass(frozen=True)
class EventPage:
    """Events newest first, and the position of the next page (None when there is none)."""

    events: list[StoredEvent]
    next: EventPosition | None


class HeldColumns(NamedTuple):
    """A workspace's typed columns in the engine: its attributes and its event properties."""

    attributes: dict[str, AttributeType]
    event_properties: dict[str, AttributeType]


def check_membership_alias(alias: str) -> str:
    """Refuse a member-set alias that could not safely name a relation; return it unchanged."""
    if not MEMBERSHIP_ALIAS.fullmatch(alias):
        raise InvalidParameter(
            "A member-set alias is m_ and 1 to 60 lowercase letters, digits or '_'.",
            code="invalid_membership_alias",
        )
    return alias


def check_workspace_id(workspace_id: str) -> str:
    """Refuse a workspace id that could not safely name a table; return it unchanged."""
    if not WORKSPACE_ID.fullmatch(workspace_id):
        raise InvalidParameter(
            "A workspace id is 1 to 64 letters, digits, '_' or '-'.", code="invalid_workspace_id"
        )
    return workspace_id


def pids_to_bitmap(pids: npt.ArrayLike) -> BitMap:
    """A bitmap of pids built from one contiguous uint32 buffer.

    pyroaring adds an ``array.array`` in one call, eight times faster than converting numpy
    integers one by one; the copy into the array is cheap next to that.
    """
    buffer = np.ascontiguousarray(pids, dtype=np.uint32)
    return BitMap(array.array(_UINT32, buffer.tobytes()))


_UINT32 = "I" if array.array("I").itemsize == 4 else "L"


@runtime_checkable
class ProfileEngine(Protocol):
    """What every profile engine implements: the core contract (DuckDB now; PostgreSQL and
    ClickHouse next). Optional capabilities are protocols of their own (:class:`IdCache`,
    ``idfiles.IdFileStager``), so nothing one engine does best is asked of the others.

    Implementations are safe to call from several threads at once. Workspaces are created on
    first use; reading a workspace that was never written answers as if it were empty.
    """

    @property
    def dialect(self) -> str:
        """The sqlglot dialect name that WHERE-SQL for this engine is compiled to."""
        ...

    def ensure_attributes(self, workspace_id: str, schema: AttributeSchema) -> None:
        """Make every declared attribute a typed column; adding one is an online change.

        Values already held in ``extra`` under a newly declared name move into the column when
        they fit its type. Changing the type of an existing column raises ``Conflict``.
        """
        ...

    def attributes(self, workspace_id: str) -> dict[str, AttributeType]:
        """The declared attributes of a workspace, as its columns say."""
        ...

    def columns_of(self, workspace_ids: Sequence[str]) -> dict[str, HeldColumns]:
        """The typed columns of each workspace's tables, as :meth:`attributes` and
        :meth:`event_properties` say, in one read of the engine's catalog however many
        workspaces are asked (a starting process checks them all); a workspace without
        tables holds none. Loads no workspace and makes nothing."""
        ...

    def upsert_profiles(
        self, workspace_id: str, records: Sequence[ProfileRecord], *, strict: bool = False
    ) -> list[UpsertResult]:
        """Merge each record's attributes into its profile, creating it when new.

        Records are read in canonical form (``engines.writes.canonical``: a nested object is
        its dotted names). A key set to None clears it; keys not given are left as stored;
        undeclared keys go to ``extra``, or with ``strict`` fail their record. A value that
        contradicts its declared type fails that record only. Results come back in the order
        of ``records``.
        """
        ...

    def get_profile(self, workspace_id: str, external_id: str) -> Profile | None:
        """One profile by its external id, or None."""
        ...

    def get_profiles_by_pid(self, workspace_id: str, pids: Sequence[int]) -> list[Profile | None]:
        """Profiles by pid, in the order asked, None where no profile has that pid."""
        ...

    def delete_profile(self, workspace_id: str, external_id: str) -> int | None:
        """Delete one profile and its events; return the pid it had (never reused), or None if
        unknown."""
        ...

    def pids_for(self, workspace_id: str, external_ids: Sequence[str]) -> list[int | None]:
        """The pid of each external id, in order, None where unknown."""
        ...

    def ensure_profiles(
        self, workspace_id: str, external_ids: Sequence[str]
    ) -> tuple[list[int], int]:
        """The pid of each external id, in order, creating an empty profile for each unknown
        one; and how many were created (static audiences hold ids before any data arrives)."""
        ...

    def external_ids_for(self, workspace_id: str, pids: Sequence[int]) -> list[str | None]:
        """The external id of each pid, in order, None where unknown."""
        ...

    def select_pids(
        self,
        workspace_id: str,
        where_sql: str,
        params: Params = (),
        memberships: Mapping[str, AbstractBitMap] | None = None,
    ) -> BitMap:
        """The pids of profiles for which ``where_sql`` is TRUE (not NULL).

        ``memberships`` names member sets the condition may test, as ``<alias>.pid IS NOT NULL``:
        each is joined to the profiles by pid under its alias (see :data:`MEMBERSHIP_ALIAS`).
        This is how ``in_audience()`` runs where the data is.
        """
        ...

    def select_query_pids(
        self, workspace_id: str, select_sql: str, *, timeout_seconds: float | None = None
    ) -> BitMap:
        """The pids a read-only member query names (an external audience's SQL source).

        ``select_sql`` is one SELECT over the tables ``profiles`` and ``events`` returning one
        column: external ids (text) or pids (integers); ids of no profile are left out. The
        engine checks it again with ``engines.queries.check_select`` in its dialect (refused:
        ``ValidationFailed`` ``sync_query_invalid``), points it at the workspace's own tables
        with ``engines.queries.point_at``, and runs it; a query that fails on the data raises
        ``Unprocessable`` (``engine_query_failed``) without the engine's SQL, and one still
        running after ``timeout_seconds`` is stopped (``engine_query_timeout``).
        """
        ...

    def select_many(
        self,
        workspace_id: str,
        predicates: Mapping[K, str],
        params: Mapping[K, Params] | None = None,
    ) -> dict[K, BitMap]:
        """Run several WHERE-SQL predicates in the way this engine does fastest; one bitmap each."""
        ...

    def count(self, workspace_id: str) -> int:
        """How many profiles the workspace holds."""
        ...

    def ensure_event_properties(self, workspace_id: str, schema: AttributeSchema) -> None:
        """Make every declared event property a typed column of the workspace's events (an
        online change; names in ``schemas.events.RESERVED_EVENT_FIELDS`` are refused). Changing
        the type of an existing property raises ``Conflict``."""
        ...

    def event_properties(self, workspace_id: str) -> dict[str, AttributeType]:
        """The declared event properties of a workspace, as its columns say."""
        ...

    def write_events(
        self,
        workspace_id: str,
        records: Sequence[EventRecord],
        *,
        received_at: datetime | None = None,
        known_new: frozenset[str] = frozenset(),
        dedupe_since: datetime | None = None,
    ) -> list[EventResult]:
        """Store events (received at ``received_at``, default now), creating an empty profile
        for each unknown external id.

        Idempotent on ``event_id`` per workspace: a record whose id is stored, or came earlier
        in ``records``, answers as a duplicate and is not written again. With ``dedupe_since``
        (the start of the dedupe window) an engine may look ids up only among the events
        received since then, so the lookup does not grow with the table (DuckDB and
        ClickHouse do; PostgreSQL's unique index finds every stored id). The ids in
        ``known_new`` are taken as not stored without looking (the caller vouches for them:
        an event file's generated ids on its first run); duplicates within ``records`` are
        still found. Every property must be
        declared (``ensure_event_properties``; a null one is ignored) and its value fit its
        type, else the record fails alone and writes nothing (its profile is not created
        either). Results come back in the order of ``records``.
        """
        ...

    def events_of(
        self,
        workspace_id: str,
        pids: Sequence[int],
        *,
        slices: Sequence[EventSlice] | None = None,
    ) -> dict[int, list[Event]]:
        """Each pid's events (only those in one of ``slices`` when given), oldest first; pids
        without any are left out. What Python evaluation of behavioural rules reads."""
        ...

    def pids_with_events_between(
        self, workspace_id: str, ranges: Sequence[tuple[datetime, datetime]]
    ) -> BitMap:
        """The pids with an event whose time is in one of ``ranges`` (each ``(low, high)``, both
        included): streaming's sweep finds the profiles whose events a window boundary
        crossed since the last sweep. One scan by time; events are appended roughly in time
        order, so an engine with per-block time statistics reads only the blocks in range."""
        ...

    def profile_events(
        self,
        workspace_id: str,
        pid: int,
        *,
        limit: int,
        after: EventPosition | None = None,
        names: Sequence[str] = (),
    ) -> EventPage:
        """One page of a profile's events, newest first (by time; ties in one fixed order),
        only those named in ``names`` when given; ``after`` is the previous page's ``next``."""
        ...

    def drop_events_before(self, workspace_id: str, before: datetime) -> int:
        """Delete every event of the workspace older than ``before`` (retention); how many."""
        ...

    def close(self) -> None:
        """Release the engine's files and connections; further calls fail."""
        ...


@runtime_checkable
class IdCache(Protocol):
    """An engine that remembers the pids it looked up lately, so the hottest reads can skip it.

    Optional: a service asks ``isinstance(engine, IdCache)`` and otherwise asks ``pids_for``.
    """

    def known_pid(self, workspace_id: str, external_id: str) -> int | None:
        """The pid of a profile looked up lately, answered from memory without blocking (None
        when not remembered: ask ``pids_for``). Never the pid of a deleted profile."""
        ...


@runtime_checkable
class Reachable(Protocol):
    """An engine behind a server, which can be lost while the service runs: ``/readyz`` asks
    it. Optional: an embedded engine (DuckDB) is up whenever its process is."""

    def ping(self) -> None:
        """Return when the server answers; raise ``ServiceUnavailable`` (``engine_unavailable``)
        when it does not."""
        ...


@dataclass(frozen=True, order=True)
class EventCursor:
    """Where a copy of a workspace's events stands: the last event copied belongs to profile
    ``pid``, and was the ``count``-th of that profile's events (in the engine's fixed order:
    by pid, then every column). Cursors compare in copy order."""

    pid: int
    count: int


MovedEvent = tuple[int, StoredEvent]
"""One event as a move copies it: its profile's pid and the event as stored."""


@runtime_checkable
class Portable(Protocol):
    """An engine a workspace can be moved out of and into (``audiences engines move``).

    Optional. Profiles keep their pids (memberships are bitmaps of pids in the metadata
    database, so they stay true without a copy) and events keep their ids and receipt times.
    Both copies run in a fixed order and each import is one transaction that skips what the
    target holds already, so a move cut anywhere can be run again without duplicates.
    """

    def last_pid(self, workspace_id: str) -> int:
        """The highest pid the workspace ever gave out (deleted profiles count), 0 if none."""
        ...

    def reserve_pids(self, workspace_id: str, through: int) -> None:
        """Make new profiles get pids above ``through`` (a no-op if they do already)."""
        ...

    def export_profiles(self, workspace_id: str, *, after_pid: int, limit: int) -> list[Profile]:
        """Up to ``limit`` profiles with a pid above ``after_pid``, by pid."""
        ...

    def import_profiles(self, workspace_id: str, profiles: Sequence[Profile]) -> int:
        """Store profiles exactly as given (pid, external id, attributes, ``updated_at``) in
        one transaction, skipping pids stored already; new pids then come after the highest
        stored. Declare the attributes first (``ensure_attributes``): undeclared ones go to
        ``extra``. How many were written."""
        ...

    def count_events(self, workspace_id: str) -> int:
        """How many events the workspace holds."""
        ...

    def count_event_ids(self, workspace_id: str) -> int:
        """How many distinct ``event_id``s the workspace's events hold (a move must keep each:
        into PostgreSQL a later copy of an id arrives without it, the first keeps it)."""
        ...

    def export_events(
        self, workspace_id: str, *, after: EventCursor | None, limit: int
    ) -> tuple[list[MovedEvent], EventCursor | None]:
        """Up to ``limit`` events following ``after`` in copy order (by pid, then every
        column), and the cursor after the last of them (None when there are no more)."""
        ...

    def import_events(
        self, workspace_id: str, events: Sequence[MovedEvent], *, after: EventCursor | None
    ) -> int:
        """Store events exported after ``after`` (declare their properties first), in one
        transaction, leaving out those the target holds already (its own last cursor is
        compared); ``Conflict`` (``engine_move_gap``) when the target lacks events before
        ``after``. How many were written."""
        ...
