"""Imports of ids only where the profile engine reads the file itself (DuckDB's ``read_csv``).

The engine stages the file and resolves ranges of its records set-based; this module keeps the
import's promises on top: every refused row reported with the row and line numbers the Python
reader gives (:mod:`audiences.services.import_formats`), the same id checks, exact counts.

Numbering needs one record per physical line, since the reader does not say on which line an
accepted record sits: when the staged records, the refused ones and the lines a final
unterminated quote swallowed do not add up to the file's lines (quoted line breaks, blank lines
between columns), :func:`stage` answers None and the file is read in Python instead. So does
an engine that cannot stage files, a file the reader cannot parse (mixed line endings, binary
data), and every import with attribute columns or NDJSON: their values are typed and merged by
``upsert_profiles`` in Python.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from audiences.engines.idfiles import IdFile, IdFileStager, IdFileUnreadable, Reject, StagedIds
from audiences.services.import_formats import (
    GZIP_MAGIC,
    ImportFormat,
    Layout,
    Row,
    check_id,
)

UNTERMINATED = "UNQUOTED VALUE"
FOUND = re.compile(r"Found: (\d+)")


@dataclass(frozen=True)
class FileMap:
    """Staged record ordinals mapped to the Python reader's row and line numbers.

    Records are the file's data lines in order (0 is on ``first_line``); ordinals number only
    the records the engine accepted. ``slots[i]`` is how many accepted records come before
    reject ``i``, so rejects land in the range of ordinals they sit among.
    """

    first_line: int
    records: int
    rejects: list[Reject]
    slots: npt.NDArray[np.int64]
    blanks: npt.NDArray[np.int64]
    blank_records: npt.NDArray[np.int64]
    width: int
    text: bool
    delimiter: str
    id_position: int

    @property
    def rows(self) -> int:
        """Data rows in the file, as the Python reader counts them (blank lines are none)."""
        return self.records - len(self.blanks) + len(self.rejects)

    def processed(self, stop: int, last: bool) -> int:
        """Rows up to the ordinal ``stop`` (the whole file when ``last``)."""
        if last:
            return self.rows
        rejected = int(np.searchsorted(self.slots, stop, side="left"))
        return stop + rejected - int(np.searchsorted(self.blanks, stop, side="left"))

    def row_of(self, ordinal: int) -> Row:
        """An empty row numbered as the record at ``ordinal``."""
        record = ordinal + int(np.searchsorted(self.slots, ordinal, side="right"))
        return self._row(record)

    def rejected(self, start: int, stop: int, last: bool) -> list[Row]:
        """The refused records among the ordinals ``[start, stop)`` (to the end when ``last``)."""
        first = int(np.searchsorted(self.slots, start, side="left"))
        end = len(self.slots) if last else int(np.searchsorted(self.slots, stop, side="left"))
        rows = []
        for reject in self.rejects[first:end]:
            row = self._row(reject.line - self.first_line)
            row.code, row.message = self._problem(reject)
            rows.append(row)
        return rows

    def _row(self, record: int) -> Row:
        blank = int(np.searchsorted(self.blank_records, record, side="left"))
        return Row(record + 1 - blank, record + self.first_line)

    def _undecodable(self, text: str) -> tuple[str, str]:
        """The Python reader checks the id before the rest of the row's encoding."""
        text = text.strip("\r\n")  # DuckDB may keep the \n of a \r\n before the line
        try:
            cells = [text] if self.text else next(csv.reader([text], delimiter=self.delimiter))
        except (csv.Error, StopIteration):
            cells = []
        if len(cells) == self.width:
            problem = check_id(cells[self.id_position].strip())
            if problem is not None and problem[0] != "invalid_utf8":
                return problem
        return "invalid_utf8", "the row is not valid UTF-8"

    def _problem(self, reject: Reject) -> tuple[str, str]:
        if reject.kind == "INVALID ENCODING":
            return self._undecodable(reject.text)
        if reject.kind in ("TOO MANY COLUMNS", "MISSING COLUMNS"):
            if self.text:  # the line holds the unit separator the reader splits text on
                return "id_invalid", "the id holds a control character"
            found = FOUND.search(reject.message)
            count = found.group(1) if found else "another number of"
            return "row_malformed", f"{count} columns where the header has {self.width}"
        if reject.kind == UNTERMINATED:
            return "row_malformed", "not valid CSV: a quoted value is never closed"
        return "row_malformed", f"not valid CSV: {reject.message}"


@dataclass
class RangeResult:
    """One range resolved: the pids of its valid rows (each at least once), the refused rows,
    and how many rows it holds."""

    pids: npt.NDArray[np.uint32]
    refused: list[Row]
    rows: int


def stage(
    engine: object,
    workspace_id: str,
    upload: Path,
    fmt: ImportFormat,
    shape: Layout,
    data_lines: int,
) -> tuple[StagedIds, FileMap] | None:
    """The file staged by the engine and its numbering, or None when Python must read it.

    ``data_lines``: the file's lines after the header, to check that records are lines.
    """
    if not isinstance(engine, IdFileStager) or fmt not in _DELIMITERS or shape.attributes:
        return None
    if shape.positions.get("*") == 0:
        return None
    text = fmt is ImportFormat.TEXT
    with upload.open("rb") as raw:
        packed = raw.read(2) == GZIP_MAGIC
    source = IdFile(
        path=upload,
        delimiter=_DELIMITERS[fmt],
        columns=1 if text else len(shape.positions),
        id_position=0 if text else shape.positions[shape.id_column],
        header=not text,
        gzip=packed,
    )
    try:
        staged = engine.stage_id_file(workspace_id, source)
    except IdFileUnreadable:
        return None
    mapped = _file_map(staged, source, text, data_lines)
    if mapped is None:
        staged.close()
    return None if mapped is None else (staged, mapped)


def resolve_range(
    staged: StagedIds, mapped: FileMap, start: int, stop: int, last: bool
) -> RangeResult:
    """Judge the irregular values of ``[start, stop)`` as the Python reader does, then have the
    engine resolve the range's valid ids."""
    lo = int(np.searchsorted(mapped.blanks, start, side="left"))
    hi = int(np.searchsorted(mapped.blanks, stop, side="left"))
    blank = set(mapped.blanks[lo:hi].tolist())
    cleaned: list[str] = []
    rejected = mapped.rejected(start, stop, last)
    refused = list(rejected)
    for ordinal, value in staged.irregular(start, stop):
        if ordinal in blank:
            continue
        stripped = value.strip()
        problem = check_id(stripped)
        if problem is None:
            cleaned.append(stripped)
            continue
        row = mapped.row_of(ordinal)
        row.code, row.message = problem
        refused.append(row)
    refused.sort(key=lambda row: row.number)
    pids = staged.resolve(start, stop, cleaned)
    rows = (stop - start) - (hi - lo) + len(rejected)
    return RangeResult(pids, refused, rows)


def _file_map(staged: StagedIds, source: IdFile, text: bool, data_lines: int) -> FileMap | None:
    first_line = 2 if source.header else 1
    rejects = staged.rejects
    records = np.asarray([r.line - first_line for r in rejects], dtype=np.int64)
    swallowed = 0
    if rejects and rejects[-1].kind == UNTERMINATED:
        swallowed = data_lines - 1 - int(records[-1])
    if staged.records + len(rejects) + swallowed != data_lines:
        return None
    slots = records - np.arange(len(records), dtype=np.int64)
    if len(slots) and (np.any(np.diff(slots) < 0) or slots[0] < 0):
        return None
    blanks = staged.blanks(text)
    blank_records = blanks + np.searchsorted(slots, blanks, side="right")
    return FileMap(
        first_line=first_line,
        records=staged.records,
        rejects=rejects,
        slots=slots,
        blanks=blanks,
        blank_records=blank_records,
        width=source.columns,
        text=text,
        delimiter=source.delimiter or "",
        id_position=source.id_position,
    )


_DELIMITERS: dict[ImportFormat, str | None] = {
    ImportFormat.CSV: ",",
    ImportFormat.TSV: "\t",
    ImportFormat.TEXT: None,
}
