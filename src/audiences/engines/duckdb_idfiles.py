"""Id files staged by DuckDB: ``read_csv`` parses the file, SQL checks and resolves the ids.

The file is read once into a temporary table of its own connection (rowid = the record's
ordinal in the file; rows the reader refuses go to its ``store_rejects`` tables with their line).
A regular expression marks each value that is not a *plain* id (empty, over the length limit, a
control character, whitespace at either end): those are few, and the caller judges them with
the same checks as the Python reader. Plain ids are resolved a range at a time: one statement
inserts the new ones (pids from the workspace's sequence), one join fetches every row's pid.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import datetime

import duckdb
import numpy as np
import numpy.typing as npt

from audiences.engines.idfiles import IdFile, IdFileUnreadable, Reject
from audiences.errors import Conflict
from audiences.schemas.memberships import MAX_ID_LENGTH

STAGED = "import_staged"
REJECTS = "import_rejects"
REJECT_SCANS = "import_reject_scans"
RANGE = "import_range"
CREATED = "import_created"
KNOWN = "import_known"
TEXT_DELIMITER = "\x1f"
"""Plain text is read as one column split on the unit separator: a line holding one is
refused by the reader (too many columns), as an id holding a control character."""

WHITESPACE = r"[\s\pZ\x{85}\x0b\x1c-\x1f]"
"""What Python's ``str.strip()`` removes (RE2's ``\\s`` is ASCII only)."""

NOT_PLAIN = rf"[\x00-\x1f]|^$|^{WHITESPACE}|{WHITESPACE}$"
BLANK = rf"{WHITESPACE}*"

OnCreated = Callable[[npt.NDArray[np.uint64], npt.NDArray[np.int64]], None]


class DuckDBStagedIds:
    """One staged file on a connection of its own; writes to the profiles under ``lock``."""

    def __init__(
        self,
        cursor: duckdb.DuckDBPyConnection,
        *,
        lock: threading.RLock,
        table: str,
        sequence: str,
        on_created: OnCreated,
        now: Callable[[], datetime],
    ) -> None:
        self._cur = cursor
        self._lock = lock
        self._table = table
        self._sequence = sequence
        self._on_created = on_created
        self._now = now
        self._records = 0
        self._columns = 1
        self._rejects: list[Reject] = []
        self._newest = 0

    def stage(self, source: IdFile) -> None:
        """Read the file into the staged table; ``IdFileUnreadable`` if DuckDB cannot."""
        self._columns = source.columns
        columns = ", ".join(f"'c{n}': 'VARCHAR'" for n in range(source.columns))
        value = f"c{source.id_position}"
        # DuckDB skips columns a query does not use, and their encoding with them: each
        # other column is tested (in a way the optimizer keeps) so that its row is checked.
        others = [f"(c{n} IS NULL) IS NOT NULL" for n in range(source.columns)]
        others[source.id_position] = "true"
        query = (
            f"CREATE TEMP TABLE {STAGED} AS SELECT {value} AS raw, {value} IS NOT NULL"
            f" AND length({value}) <= {MAX_ID_LENGTH}"
            f" AND NOT regexp_matches({value}, $pattern) AS plain"
            f" FROM read_csv($path, header = false, skip = $skip, columns = {{{columns}}},"
            " auto_detect = false, delim = $delim, quote = $quote, escape = $quote,"
            " allow_quoted_nulls = false, compression = $compression, store_rejects = true,"
            f" rejects_table = '{REJECTS}', rejects_scan = '{REJECT_SCANS}')"
            f" WHERE {' AND '.join(others)}"
        )
        text = source.delimiter is None
        params = {
            "pattern": NOT_PLAIN,
            "path": str(source.path),
            "skip": 1 if source.header else 0,
            "delim": TEXT_DELIMITER if text else source.delimiter,
            "quote": "" if text else '"',
            "compression": "gzip" if source.gzip else "none",
        }
        try:
            self._cur.execute(query, params)
        except duckdb.Error as error:
            raise IdFileUnreadable(str(error).splitlines()[0]) from None
        row = self._cur.execute(f"SELECT count(*) FROM {STAGED}").fetchone()
        self._records = int(row[0]) if row else 0
        self._join_known()
        found = self._cur.execute(
            f"SELECT line, error_type, error_message, csv_line FROM {REJECTS}"
            " ORDER BY line, byte_position, column_idx"
        ).fetchall()
        seen: set[int] = set()
        for line, kind, message, text in found:
            if line not in seen:
                seen.add(line)
                self._rejects.append(Reject(int(line), str(kind), str(message), str(text or "")))

    def _join_known(self) -> None:
        """Give each plain id already stored its pid, in one join (DuckDB's best case).

        Profiles created later (by this import's ranges or by other writers) all get pids above
        the newest one now: every engine write takes the lock, so none is half done.
        """
        with self._lock:
            row = self._cur.execute(f"SELECT coalesce(max(pid), 0) FROM {self._table}").fetchone()
            self._newest = int(row[0]) if row else 0
        self._cur.execute(
            f"CREATE TEMP TABLE {KNOWN} AS SELECT s.rowid AS n, p.pid FROM {STAGED} s"
            f" JOIN {self._table} p ON p.external_id = s.raw WHERE s.plain"
        )

    @property
    def records(self) -> int:
        """How many records the reader accepted."""
        return self._records

    @property
    def rejects(self) -> list[Reject]:
        """The records the reader refused, one per line, in file order."""
        return list(self._rejects)

    def blanks(self, text: bool) -> npt.NDArray[np.int64]:
        """Ordinals of blank lines (with ``text``, whitespace only too). DuckDB gives a blank
        line of a one-column file as a NULL; with more columns it skips it."""
        if self._columns > 1:
            return np.zeros(0, dtype=np.int64)
        where = "raw IS NULL"
        if text:
            where += " OR (NOT plain AND regexp_full_match(raw, $blank))"
        query = f"SELECT rowid AS n FROM {STAGED} WHERE {where} ORDER BY n"
        params = {"blank": BLANK} if text else {}
        found = self._cur.execute(query, params).fetchnumpy()["n"]
        return np.asarray(found, dtype=np.int64)

    def irregular(self, start: int, stop: int) -> list[tuple[int, str]]:
        """(ordinal, value) of the records of ``[start, stop)`` that are not plain ids."""
        query = (
            f"SELECT rowid AS n, coalesce(raw, '') FROM {STAGED} WHERE rowid >= ? AND rowid < ?"
            " AND NOT plain ORDER BY n"
        )
        return [(int(n), str(raw)) for n, raw in self._cur.execute(query, [start, stop]).fetchall()]

    def resolve(self, start: int, stop: int, extra: Sequence[str]) -> npt.NDArray[np.uint32]:
        """Create the profiles of the range's new plain ids and of ``extra``; the pids of all
        those rows (each at least once).

        Known ids have their pid from staging. The others are looked up among the profiles
        created since staging only (few row groups, by the pid zone maps), then the missing
        ones are given pids in a table of their own and inserted from it in one statement
        (``RETURNING`` the same columns costs more than the insert).
        """
        bounds = {"start": start, "stop": stop}
        known = self._cur.execute(
            f"SELECT pid FROM {KNOWN} WHERE n >= $start AND n < $stop", bounds
        ).fetchnumpy()["pid"]
        found, unknown_extra = self._lookup_extra(extra)
        candidates = (
            f"SELECT raw AS id FROM {STAGED} WHERE rowid >= $start AND rowid < $stop AND plain"
            f" AND rowid NOT IN (SELECT n FROM {KNOWN} WHERE n >= $start AND n < $stop)"
            " UNION SELECT unnest($extra::VARCHAR[]) AS id"
        )
        joined = (
            f"CREATE OR REPLACE TEMP TABLE {RANGE} AS SELECT s.id, p.pid FROM ({candidates}) s"
            f" LEFT JOIN (SELECT pid, external_id FROM {self._table} WHERE pid > $newest) p"
            " ON p.external_id = s.id"
        )
        with self._lock:
            self._cur.execute(joined, {**bounds, "extra": unknown_extra, "newest": self._newest})
            created = self._cur.execute(f"SELECT pid FROM {RANGE} WHERE pid IS NOT NULL")
            later = created.fetchnumpy()["pid"]
            made = self._insert()
        self._cur.execute(f"DROP TABLE {RANGE}")
        parts = [known, found, later, made]
        return np.concatenate([np.asarray(part, dtype=np.uint32) for part in parts])

    def _lookup_extra(self, extra: Sequence[str]) -> tuple[npt.NDArray[np.uint32], list[str]]:
        """The pids of the ``extra`` ids already stored, and the others (a scan of every id:
        extra ids are the few the caller cleaned of whitespace)."""
        if not extra:
            return np.zeros(0, dtype=np.uint32), []
        rows = self._cur.execute(
            f"SELECT e.id, p.pid FROM (SELECT unnest(?::VARCHAR[]) AS id) e"
            f" LEFT JOIN {self._table} p ON p.external_id = e.id",
            [list(dict.fromkeys(extra))],
        ).fetchall()
        pids = np.asarray([pid for _, pid in rows if pid is not None], dtype=np.uint32)
        return pids, [eid for eid, pid in rows if pid is None]

    def _insert(self) -> npt.NDArray[np.uint32]:
        """Insert the range's new profiles in a transaction; their pids, taught to the index."""
        self._cur.execute("BEGIN TRANSACTION")
        try:
            self._cur.execute(
                f"CREATE OR REPLACE TEMP TABLE {CREATED} AS SELECT nextval($sequence) AS pid,"
                f" id, hash(id) AS h FROM {RANGE} WHERE pid IS NULL",
                {"sequence": self._sequence},
            )
            self._cur.execute(
                f"INSERT INTO {self._table} (pid, external_id, updated_at)"
                f" SELECT pid, id, $now FROM {CREATED}",
                {"now": self._now()},
            )
            made = self._cur.execute(f"SELECT pid, h FROM {CREATED}").fetchnumpy()
            self._cur.execute(f"DROP TABLE {CREATED}")
            self._cur.execute("COMMIT")
        except (duckdb.ConversionException, duckdb.OutOfRangeException):
            self._cur.execute("ROLLBACK")
            exhausted = "This workspace has used every pid."
            raise Conflict(exhausted, code="pids_exhausted") from None
        except BaseException:
            self._cur.execute("ROLLBACK")
            raise
        if len(made["pid"]):
            self._on_created(
                np.asarray(made["h"], dtype=np.uint64), np.asarray(made["pid"], dtype=np.int64)
            )
        return np.asarray(made["pid"], dtype=np.uint32)

    def close(self) -> None:
        """Close the connection, which drops the staged tables."""
        self._cur.close()
