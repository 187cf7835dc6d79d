"""Id files an engine reads itself: what the caller says about the file, and what comes back.

An import of ids only (a CSV or TSV column, or plain text) is the one bulk path where a file's
rows need nothing but a lookup of each id: an engine that can parse the file where the profiles
live (DuckDB) stages it once, then resolves ranges of its rows set-based. Engines that cannot
do that simply do not implement :class:`IdFileStager`; the importer reads the file in Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt


class IdFileUnreadable(ValueError):
    """The engine's reader cannot make sense of the file; the caller reads it another way."""


@dataclass(frozen=True)
class IdFile:
    """Where the ids are: ``delimiter`` None is plain text (one id per line, no quoting)."""

    path: Path
    delimiter: str | None
    columns: int
    id_position: int
    header: bool
    gzip: bool


@dataclass(frozen=True)
class Reject:
    """A record the reader refused: its physical line (1-based), the reader's reason, and the
    line's text as the reader saw it (bytes that are not UTF-8 replaced)."""

    line: int
    kind: str
    message: str
    text: str


@runtime_checkable
class StagedIds(Protocol):
    """A file staged by the engine: records numbered from 0 in file order, rejects aside."""

    @property
    def records(self) -> int:
        """How many records the reader accepted (blank lines of a one-column file included)."""
        ...

    @property
    def rejects(self) -> list[Reject]:
        """The records the reader refused, one per line, in file order."""
        ...

    def blanks(self, text: bool) -> npt.NDArray[np.int64]:
        """Ordinals of blank lines (with ``text``, whitespace-only ones too), sorted."""
        ...

    def irregular(self, start: int, stop: int) -> list[tuple[int, str]]:
        """The records of ``[start, stop)`` whose value is not a plain id (empty, too long, a
        control character or whitespace at an end; blank lines too), as (ordinal, value): the
        caller judges them."""
        ...

    def resolve(self, start: int, stop: int, extra: Sequence[str]) -> npt.NDArray[np.uint32]:
        """Create a profile for each new plain id of ``[start, stop)`` and each of ``extra``
        (valid ids the caller cleaned from irregular records); the pids of all those rows
        (each at least once), in no particular order."""
        ...

    def close(self) -> None:
        """Drop the staged rows."""
        ...


@runtime_checkable
class IdFileStager(Protocol):
    """An engine that stages id files itself."""

    def stage_id_file(self, workspace_id: str, source: IdFile) -> StagedIds:
        """Parse the file into staged records; ``IdFileUnreadable`` when the reader cannot."""
        ...
