"""How the ClickHouse engine talks to ClickHouse: one small seam, two implementations.

:class:`ChdbClient` runs ClickHouse in this process (``chdb``, a folder on disk): the embedded
form and the test bed. :class:`ServerClient` talks HTTP to a server or cluster through
``clickhouse-connect``. Both send statement text and get bytes back in a named ClickHouse
format, so the engine holds no driver-specific code; both raise :class:`ClickHouseError` for a
refused statement, and ``ServiceUnavailable`` (``engine_unavailable``) when ClickHouse is out
of reach.

Values never travel as server-side parameters: chdb reads those as escaped text (a newline
in a string fails), so the engine writes values into statements as sqlglot literals, lists
as one JSON text literal, and rows as a ``JSONColumns`` document.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from audiences.errors import ServiceUnavailable

SETTINGS: dict[str, str | int] = {
    "session_timezone": "UTC",
    "join_use_nulls": 1,
    "date_time_input_format": "best_effort",
    "output_format_json_quote_64bit_integers": 0,
    "output_format_json_quote_denormals": 1,
    "precise_float_parsing": 1,
    "allow_suspicious_types_in_order_by": 1,
    "optimize_min_equality_disjunction_chain_length": 1_000_000,
    "max_query_size": 1 << 30,
}
"""Every session runs with these: rules compare dates in UTC; a LEFT JOIN's missing side is
NULL (how member sets are tested, ``m_0.pid IS NOT NULL``), not 0; inserted times are ISO
8601 with offsets, floats read exactly; 64-bit integers come back as JSON numbers; events
sort on every column, list properties (one-type Variants, ordered as their arrays) too; and
``x = a OR x = b OR …`` stays as written: ClickHouse would turn it into ``x IN (a, b, …)``,
whose hash set tells -0.0 from 0.0 (the rule compiler writes IN over numbers as equalities
for that reason); and statements may be long: a member set travels as one hex literal and a
batch's ids as one JSON literal, which passed the default 256 KiB at a few hundred thousand
members or 10,000 ids of 25 characters."""

_CODE = re.compile(r"Code: (\d+)")


class ClickHouseError(Exception):
    """ClickHouse refused a statement; ``code`` is its error code (0 when it gave none)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        found = _CODE.search(message)
        self.code = int(found.group(1)) if found else 0


MISSING_EXTRA = "its client is not installed: pip install 'audiences[clickhouse]'"
"""Why the engine cannot open when the ``clickhouse`` extra is missing."""


def unavailable(reason: str) -> ServiceUnavailable:
    """The error for a ClickHouse that cannot be reached (a server down, a folder that cannot
    be opened): 503 ``engine_unavailable``, as for every engine."""
    return ServiceUnavailable(
        f"The ClickHouse profile engine is unavailable: {reason}", code="engine_unavailable"
    )


class Client(Protocol):
    """What the engine needs of a ClickHouse connection; safe to call from several threads."""

    def query(self, sql: str, fmt: str) -> bytes:
        """Run a statement and return its result in the ClickHouse format ``fmt``."""
        ...

    def command(self, sql: str) -> None:
        """Run a statement that returns nothing (DDL, DELETE)."""
        ...

    def insert(self, table: str, columns: list[str], document: bytes) -> None:
        """Append rows given as one ``JSONColumns`` document (a list per column)."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


class ChdbClient:
    """ClickHouse in process on a folder (``chdb``).

    chdb hosts one embedded ClickHouse per process, bound to one folder: connections to the
    same folder share it, and a second folder cannot be opened while the first is. Engines
    that must stay apart in one process use databases of their own in one folder.
    """

    def __init__(self, path: str | Path) -> None:
        try:
            import chdb  # an optional dependency: the ``clickhouse`` extra
        except ImportError:
            raise unavailable(MISSING_EXTRA) from None

        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        options = "&".join(f"{key}={value}" for key, value in SETTINGS.items())
        try:
            self._con: Any = chdb.connect(f"{folder}?{options}")  # type: ignore[no-untyped-call]
        except RuntimeError as error:
            raise unavailable(f"chdb cannot open {folder}: {error}") from None
        self._error = chdb.ChdbError
        self._lock = threading.Lock()

    def query(self, sql: str, fmt: str) -> bytes:
        """Run a statement on the embedded ClickHouse."""
        try:
            result = self._con.query(sql, fmt)
        except RuntimeError as error:
            raise ClickHouseError(str(error)) from None
        return bytes(result.bytes())

    def command(self, sql: str) -> None:
        """Run a statement that returns nothing."""
        self.query(sql, "TabSeparated")

    def insert(self, table: str, columns: list[str], document: bytes) -> None:
        """``INSERT … FORMAT JSONColumns`` with the document after the statement."""
        names = ", ".join(columns)
        self.query(f"INSERT INTO {table} ({names}) FORMAT JSONColumns {document.decode()}", "TSV")

    def close(self) -> None:
        """Close this connection; the embedded ClickHouse stops with the last one."""
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None


def connect(url: str, folder: str | Path) -> tuple[Client, str]:
    """A client for ``url`` and the database the engine keeps its tables in.

    ``http(s)://user:password@host:8123/database`` is a server (database ``audiences`` when
    the path names none); ``chdb:<folder>`` is ClickHouse in process on that folder (with
    ``?database=<name>`` to use another database than ``audiences``); an empty URL is
    ClickHouse in process on ``folder``.
    """
    parts = urlsplit(url)
    if parts.scheme in ("http", "https"):
        return ServerClient.connect(url), parts.path.strip("/") or DATABASE
    if parts.scheme == "chdb" or not url:
        database = parse_qs(parts.query).get("database", [DATABASE])[0]
        return ChdbClient(parts.path or folder), database
    raise ValueError(f"a ClickHouse URL is http(s)://… or chdb:<folder>, not {url!r}")


DATABASE = "audiences"
"""The database the engine's tables live in, unless a server URL names another."""


class ServerClient:
    """A ClickHouse server or cluster over HTTP(S) (``clickhouse-connect``).

    Wraps any clickhouse-connect client made with :data:`SETTINGS`: :meth:`connect` makes one
    for a URL; the tests hand it one on clickhouse-connect's own chdb backend, so that this
    class runs in CI although no server does.
    """

    def __init__(self, client: Any) -> None:
        from clickhouse_connect.driver.exceptions import ClickHouseError as DriverError
        from clickhouse_connect.driver.exceptions import OperationalError

        self._client = client
        self._error = DriverError
        self._down = OperationalError

    @classmethod
    def connect(cls, url: str) -> ServerClient:
        """A client of the server at ``http(s)://user:password@host:port/…``."""
        try:
            import clickhouse_connect
            from clickhouse_connect.driver.exceptions import OperationalError
        except ImportError:
            raise unavailable(MISSING_EXTRA) from None

        parts = urlsplit(url)
        try:
            client = clickhouse_connect.get_client(
                host=parts.hostname or "localhost",
                port=parts.port or (8443 if parts.scheme == "https" else 8123),
                username=unquote(parts.username or "default"),
                password=unquote(parts.password or ""),
                secure=parts.scheme == "https",
                settings=dict(SETTINGS),
            )
        except OperationalError as error:
            raise unavailable(f"{parts.hostname} does not answer") from error
        return cls(client)

    def query(self, sql: str, fmt: str) -> bytes:
        """Run a statement on the server."""
        try:
            return bytes(self._client.raw_query(sql, fmt=fmt))
        except self._down as error:
            raise unavailable(str(error).strip()) from None
        except self._error as error:
            raise ClickHouseError(str(error)) from None

    def command(self, sql: str) -> None:
        """Run a statement that returns nothing (no FORMAT clause is added to it)."""
        try:
            self._client.command(sql)
        except self._down as error:
            raise unavailable(str(error).strip()) from None
        except self._error as error:
            raise ClickHouseError(str(error)) from None

    def insert(self, table: str, columns: list[str], document: bytes) -> None:
        """Append rows from a ``JSONColumns`` document."""
        try:
            self._client.raw_insert(table, columns, document, fmt="JSONColumns")
        except self._down as error:
            raise unavailable(str(error).strip()) from None
        except self._error as error:
            raise ClickHouseError(str(error)) from None

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()
