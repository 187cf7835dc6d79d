"""Imports read by DuckDB itself: the same rows, errors and numbers as the Python reader.

The Python reader (``import_formats.rows``) is the oracle: for every file DuckDB stages, the
valid ids, each refused row's number, line and code, and the row count must be the ones the
Python reader gives. Files DuckDB cannot number exactly must not be staged at all.
"""

from __future__ import annotations

import csv
import gzip
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from audiences.engines.duckdb import DuckDBEngine
from audiences.services import import_staged
from audiences.services.import_formats import FileRefused, ImportFormat, layout, rows

WORKSPACES = (f"w{n}" for n in itertools.count())

Outcome = tuple[set[str], int, list[tuple[int, int, str]], int]
"""The distinct valid ids, how many valid rows, (row, line, code) of each refused row, rows."""


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DuckDBEngine]:
    engine = DuckDBEngine(tmp_path_factory.mktemp("staged"), memory_limit="512MB")
    yield engine
    engine.close()


def python_reader(path: Path, fmt: ImportFormat) -> Outcome:
    """The outcome as the Python reader has it."""
    shape = layout(path, fmt, id_column=None, attributes=None)
    valid: set[str] = set()
    errors = []
    count = 0
    for row in rows(path, fmt, shape):
        count += 1
        if row.code is None:
            valid.add(row.external_id or "")
        else:
            errors.append((row.number, row.line, row.code))
    return valid, count - len(errors), errors, count


def staged_reader(
    engine: DuckDBEngine, path: Path, fmt: ImportFormat, size: int = 3
) -> Outcome | None:
    """The same, through the staged path in ranges of ``size`` records; None if not staged."""
    workspace = next(WORKSPACES)
    shape = layout(path, fmt, id_column=None, attributes=None)
    lines = python_lines(path, fmt)
    made = import_staged.stage(engine, workspace, path, fmt, shape, lines)
    if made is None:
        return None
    staged, mapped = made
    valid: set[str] = set()
    errors = []
    count = processed = 0
    try:
        for start in range(0, mapped.records + 1, size):
            stop = min(start + size, mapped.records)
            last = stop == mapped.records
            result = import_staged.resolve_range(staged, mapped, start, stop, last)
            ids = engine.external_ids_for(workspace, result.pids.tolist())
            valid.update(eid or "?" for eid in ids)
            assert len(set(result.pids.tolist())) <= result.rows - len(result.refused)
            errors += [(row.number, row.line, row.code or "") for row in result.refused]
            count += result.rows
            assert mapped.processed(stop, last) >= processed
            processed = mapped.processed(stop, last)
            if last:
                break
    finally:
        staged.close()
    assert processed == count == mapped.rows
    return valid, count - len(errors), errors, count


def python_lines(path: Path, fmt: ImportFormat) -> int:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    lines = data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
    return lines - (0 if fmt is ImportFormat.TEXT else 1)


def check_same(engine: DuckDBEngine, path: Path, fmt: ImportFormat) -> bool:
    """Whether DuckDB staged the file; when it did, its outcome is the Python reader's."""
    expected = python_reader(path, fmt)
    got = staged_reader(engine, path, fmt)
    if got is None:
        return False
    assert got == expected, repr(path.read_bytes()[:300])
    return True


def trailing_delimiter(line: bytes, sep: str, width: int) -> bool:
    cells = next(csv.reader([line.decode("utf-8", "replace")], delimiter=sep), [])
    return len(cells) == width + 1 and cells[-1] == "" and line.endswith(sep.encode())


PIECES = [
    "a",
    "b",
    "u1",
    " c ",
    "",
    "\t",
    "x" * 513,
    "y" * 512,
    "d\x01",
    '"q"',
    '"r,s"',
    '""',
    "é",
    "\u3000z",
    "e,f",
    "g\x1f",
    " ",
    "h\u00a0",
]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from([ImportFormat.CSV, ImportFormat.TSV, ImportFormat.TEXT]),
    st.booleans(),
    st.lists(
        st.tuples(st.sampled_from(PIECES), st.sampled_from(["", "pro", "\xff", "a,b"])),
        max_size=12,
    ),
    st.sampled_from([b"\n", b"\r\n"]),
    st.booleans(),
)
def test_staged_imports_read_like_the_python_reader(
    engine: DuckDBEngine,
    tmp_path_factory: pytest.TempPathFactory,
    fmt: ImportFormat,
    two_columns: bool,
    lines: list[tuple[str, str]],
    newline: bytes,
    final_newline: bool,
) -> None:
    sep = "\t" if fmt is ImportFormat.TSV else ","
    body = []
    if fmt is not ImportFormat.TEXT:
        body.append(b"id" + (f"{sep}plan".encode() if two_columns else b""))
    for value, plan in lines:
        line = value.encode("utf-8", "surrogateescape")
        if two_columns and fmt is not ImportFormat.TEXT:
            extra = b"\xff" if plan == "\xff" else plan.encode()
            line += sep.encode() + extra
        body.append(line)
    if fmt is not ImportFormat.TEXT:
        # DuckDB reads one delimiter too many at the end of a row as the row's end (see below).
        width = 2 if two_columns else 1
        assume(not any(trailing_delimiter(line, sep, width) for line in body[1:]))
    content = newline.join(body) + (newline if final_newline and body else b"")
    path = tmp_path_factory.mktemp("file") / "upload"
    path.write_bytes(content)
    try:
        layout(path, fmt, id_column=None, attributes=None)
    except FileRefused:
        return
    check_same(engine, path, fmt)


@pytest.mark.parametrize(
    ("content", "fmt"),
    [
        (b"id\na\nb\na\n", ImportFormat.CSV),
        (b"id,plan\n" + b"x" * 600 + b",free\n\xff\xfe,free\nc,free,extra\n", ImportFormat.CSV),
        (b'id,plan\na,pro\n"broken,free\nd,team\n', ImportFormat.CSV),
        (b'id\na\n"b\nc\n', ImportFormat.CSV),
        (b"id\na\n\nb\n\n", ImportFormat.CSV),
        (b"email\tid\nq@x\tg1\nr@x\tg2\n", ImportFormat.TSV),
        (b"id\tplan\na\tpro\n", ImportFormat.CSV),
        (b't1\nt2\n\n  \n t3 \n"q,1\n', ImportFormat.TEXT),
        (b"t1\r\nt2\r\n", ImportFormat.TEXT),
        (b"a\x00b\nc\n", ImportFormat.TEXT),
        (b"id\na\xffb\nc\n", ImportFormat.CSV),
    ],
)
def test_the_bad_input_cases_are_staged_and_read_like_python(
    engine: DuckDBEngine, tmp_path: Path, content: bytes, fmt: ImportFormat
) -> None:
    path = tmp_path / "upload"
    path.write_bytes(content)
    assert check_same(engine, path, fmt)


def test_one_trailing_delimiter_ends_the_row_where_duckdb_reads_the_file(
    engine: DuckDBEngine, tmp_path: Path
) -> None:
    """The one difference from the Python reader (which refuses ``a,`` in a one-column file as
    two columns): DuckDB's reader takes a delimiter at the very end of a row as its end."""
    path = tmp_path / "upload"
    path.write_bytes(b"id\na,\nb\n")
    assert staged_reader(engine, path, ImportFormat.CSV) == ({"a", "b"}, 2, [], 2)


def test_gzip_is_staged(engine: DuckDBEngine, tmp_path: Path) -> None:
    path = tmp_path / "upload"
    path.write_bytes(gzip.compress(b"id\na\n\xff\nb\n"))
    assert check_same(engine, path, ImportFormat.CSV)


@pytest.mark.parametrize(
    "content",
    [
        b'id,plan\na,pro\n"multi\nline",free\nb,x\n',  # a quoted line break: records are not lines
        b"id,plan\na,pro\n\nb,free\n",  # DuckDB skips a blank line between columns
        b"id\na\r\nb\nc\r\n",  # mixed line endings: DuckDB's reader stops
        bytes(range(256)) * 8,  # binary
    ],
)
def test_files_duckdb_cannot_number_fall_back_to_python(
    engine: DuckDBEngine, tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "upload"
    path.write_bytes(content)
    if content.startswith(b"id"):
        assert not check_same(engine, path, ImportFormat.CSV)
    else:
        assert not check_same(engine, path, ImportFormat.TEXT)


def test_staged_ranges_create_each_new_profile_once_and_teach_the_index(
    engine: DuckDBEngine, tmp_path: Path
) -> None:
    workspace = next(WORKSPACES)
    known, _ = engine.ensure_profiles(workspace, ["k1", "k2"])
    path = tmp_path / "upload"
    path.write_bytes(b"id\nk1\nn1\nk2\nn1\nn2\n k1\n")
    shape = layout(path, ImportFormat.CSV, id_column=None, attributes=None)
    made = import_staged.stage(engine, workspace, path, ImportFormat.CSV, shape, 6)
    assert made is not None
    staged, mapped = made
    try:
        first = import_staged.resolve_range(staged, mapped, 0, 4, False)
        second = import_staged.resolve_range(staged, mapped, 4, 6, True)
    finally:
        staged.close()
    assert engine.count(workspace) == 4
    pids = engine.pids_for(workspace, ["k1", "n1", "k2", "n2"])
    assert set(first.pids.tolist()) == {pids[0], pids[1], pids[2]}
    assert set(second.pids.tolist()) == {pids[3], known[0]}
    assert (first.rows, second.rows) == (4, 2)
    assert len(set(pids)) == 4 and None not in pids
