"""Statements compiled once per dialect and run straight on the DBAPI cursor.

For the hottest writes, where SQLAlchemy's per-execution work (cache keys, execution contexts,
result wrappers) costs more than the database does: the SQL text, parameter order and bind
processors come from SQLAlchemy itself, computed once, so values are stored exactly as a
normal execution stores them (JSON through the engine's serializer, timestamps as the dialect
keeps them). The statement runs in the transaction of the connection it is given. Column
defaults are not run: an INSERT is given a value for every column it names, and SQLAlchemy
names every column that has a default.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Dialect
from sqlalchemy.sql import ClauseElement


class Prepared:
    """One statement, compiled for each dialect it meets."""

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        self._compiled: dict[Dialect, _Compiled] = {}
        self._lock = threading.Lock()

    def execute(self, connection: Connection, params: Mapping[str, Any]) -> Any:
        """Run with ``params`` (by bind name) on ``connection``'s DBAPI cursor; the cursor."""
        compiled = self._compiled_for(connection.dialect)
        cursor = connection.connection.cursor()
        cursor.execute(compiled.sql, compiled.parameters(params))
        return cursor

    def first(self, connection: Connection, params: Mapping[str, Any]) -> Sequence[Any] | None:
        """The first row of the result, or None."""
        cursor = self.execute(connection, params)
        try:
            row: Sequence[Any] | None = cursor.fetchone()
            return row
        finally:
            cursor.close()

    def run(self, connection: Connection, params: Mapping[str, Any]) -> None:
        """Run a statement that returns no rows."""
        self.execute(connection, params).close()

    def run_many(self, connection: Connection, params: Sequence[Mapping[str, Any]]) -> None:
        """Run a statement that returns no rows once for each of ``params``, in one
        ``executemany`` (one call into the driver for a whole group of rows)."""
        if not params:
            return
        compiled = self._compiled_for(connection.dialect)
        cursor = connection.connection.cursor()
        try:
            rows: Any = [compiled.parameters(p) for p in params]  # all lists, or all dicts
            cursor.executemany(compiled.sql, rows)
        finally:
            cursor.close()

    def _compiled_for(self, dialect: Dialect) -> _Compiled:
        compiled = self._compiled.get(dialect)
        if compiled is None:
            with self._lock:
                compiled = self._compiled.setdefault(dialect, _Compiled(self.statement, dialect))
        return compiled


class _Compiled:
    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = compiled.string
        self.order: Sequence[str] | None = getattr(compiled, "positiontup", None)
        self.processors: dict[str, Callable[[Any], Any]] = {}
        for name, bind in getattr(compiled, "binds", {}).items():
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                self.processors[name] = processor

    def parameters(self, params: Mapping[str, Any]) -> Sequence[Any] | dict[str, Any]:
        processors = self.processors
        values = {
            name: processors[name](value) if name in processors else value
            for name, value in params.items()
        }
        if self.order is None:
            return values
        return [values[name] for name in self.order]
