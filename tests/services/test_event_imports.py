"""Event files read and checked fast: the NDJSON reader reads bytes as the text reader read lines,
and a row made a record without pydantic is the record the model makes of it."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from audiences.engines.base import EventRecord
from audiences.schemas.events import EventWrite
from audiences.services.event_imports import Plain
from audiences.services.import_formats import ImportFormat, Layout, Row, check_id, rows

RECEIVED = datetime(2026, 1, 1, tzinfo=UTC)
EVERY = Layout("profile_id", (), {"*": 0})


def text_rows(content: bytes) -> list[Row]:
    """The rows as the reader made them before it read bytes: the file decoded (undecodable
    bytes kept as lone surrogates), split into lines as text, each encoded again for orjson."""
    found: list[Row] = []
    number = 0
    text = io.StringIO(content.decode("utf-8", "surrogateescape"), newline="")
    for line_number, line in enumerate(text, start=1):
        if not line.strip():
            continue
        number += 1
        try:
            record = orjson.loads(line.encode("utf-8"))
        except (orjson.JSONDecodeError, UnicodeEncodeError):
            found.append(Row(number, line_number, code="row_malformed", message="x"))
            continue
        value = record.get("profile_id") if isinstance(record, dict) else None
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(record, dict):
            found.append(Row(number, line_number, code="row_malformed", message="x"))
        elif not isinstance(value, str):
            found.append(Row(number, line_number, code="id_missing", message="x"))
        elif (problem := check_id(value)) is not None:
            found.append(Row(number, line_number, code=problem[0], message="x"))
        else:
            values = {k: v for k, v in record.items() if k != "profile_id"}
            found.append(Row(number, line_number, external_id=value, values=values))
    return found


LINES = [
    b'{"profile_id": "a", "event": "view"}',
    b'{"profile_id": 7, "event": "view", "properties": {"x": 1}}',
    b'{"profile_id": "caf\xc3\xa9", "event": "v\xc3\xa9"}',
    b'{"profile_id": "b\xff", "event": "view"}',
    b'{"profile_id": "", "event": "view"}',
    b'{"event": "view"}',
    b"[1, 2]",
    b"not json",
    b"",
    b"   ",
    b"\t \x0b\x0c",
    b"\x1c\x1d",
    b"\xc2\xa0",
    b"\xe2\x80\xa8",
    b"\xef\xbb\xbf{}",
    b'{"profile_id": "a\\u0000b", "event": "view"}',
]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.sampled_from(LINES), st.sampled_from([b"\n", b"\r\n", b"\r", b"\r\r\n"])),
        max_size=10,
    ),
    st.booleans(),
)
def test_ndjson_lines_read_as_bytes_make_the_rows_the_text_reader_made(
    tmp_path_factory: pytest.TempPathFactory, lines: list[tuple[bytes, bytes]], final: bool
) -> None:
    content = b"".join(line + end for line, end in lines)
    if lines and not final:
        content = content.rstrip(b"\r\n")
    path = tmp_path_factory.mktemp("file") / "upload"
    path.write_bytes(content)
    found = [
        (row.number, row.line, row.external_id, row.values, row.code)
        for row in rows(path, ImportFormat.NDJSON, EVERY)
    ]
    expected = [
        (row.number, row.line, row.external_id, row.values, row.code) for row in text_rows(content)
    ]
    assert found == expected


def test_a_large_ndjson_file_reads_every_line(tmp_path: Path) -> None:
    lines = [orjson.dumps({"profile_id": f"u{n}", "event": "e"}) for n in range(20_000)]
    path = tmp_path / "upload"
    path.write_bytes(b"\r\n".join(lines))
    found = list(rows(path, ImportFormat.NDJSON, EVERY))
    assert [row.external_id for row in found] == [f"u{n}" for n in range(20_000)]
    assert found[-1].line == 20_000


def by_model(fields: dict[str, Any]) -> EventRecord | None:
    """The record the model makes of the row, None when it refuses it."""
    try:
        event = EventWrite.model_validate({"profile_id": "p", **fields})
    except ValidationError:
        return None
    return EventRecord(
        "p", event.event, event.timestamp or RECEIVED, event.properties, event.event_id or "u:1"
    )


TIMES = st.one_of(
    st.none(),
    st.integers(0, 10**10),
    st.datetimes(timezones=st.just(UTC)),
    st.builds(
        "{:04d}-{:02d}-{:02d}{}{:02d}:{:02d}:{:02d}{}{}".format,
        st.integers(0, 10000),
        st.integers(0, 13),
        st.integers(0, 32),
        st.sampled_from(["T", "t", " "]),
        st.integers(0, 25),
        st.integers(0, 61),
        st.integers(0, 61),
        st.sampled_from(["", ".5", ".123456", ".1234567", "."]),
        st.sampled_from(["Z", "z", "", "+00:00", "-00:00", "+05:30", "-23:59", "+24:00", "+5:30"]),
    ),
)
NAMES = st.one_of(
    st.sampled_from(["view", "", "a" * 200, "a" * 201, "caf\xe9", "a\x00", "a\nb", "\ud800", 3]),
    st.text(max_size=5),
)
IDS = st.one_of(st.none(), st.sampled_from(["e1", "", "x" * 513, "a\x1f", "\udcff", 5]))
PROPERTIES = st.one_of(
    st.dictionaries(
        st.text(max_size=3),
        st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=3)),
        max_size=3,
    ),
    st.none(),
    st.lists(st.integers(), max_size=2),
)


@settings(max_examples=400, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "event": NAMES,
            "timestamp": TIMES,
            "properties": PROPERTIES,
            "event_id": IDS,
            "extra": st.just(1),
        },
    )
)
def test_a_row_made_a_record_without_the_model_is_the_record_the_model_makes(
    fields: dict[str, Any],
) -> None:
    try:
        nul = b"\\u0000" in orjson.dumps(fields.get("properties"))
    except TypeError:  # an integer JSON cannot hold: unsure, as the import is
        nul = True
    made = Plain(not nul).record("p", fields, RECEIVED, "u:1")
    if made is None:
        return  # the model validates it, and says why when it refuses it
    expected = by_model(fields)
    assert made == expected
    assert expected is not None and made.timestamp.utcoffset() == expected.timestamp.utcoffset()


def test_the_common_rows_need_no_model() -> None:
    plain = Plain(nul_free=True)
    for fields in (
        {"event": "view"},
        {"event": "view", "timestamp": "2024-10-06T10:30:18Z", "properties": {"page": None}},
        {"event": "o", "timestamp": "2024-10-06T10:30:18.123+02:00", "event_id": "o1"},
    ):
        made = plain.record("p", fields, RECEIVED, "u:1")
        assert made is not None and made == by_model(fields)
    assert plain.record("p", {"event": "view", "properties": {}}, RECEIVED, "u:1") is not None
    assert Plain(nul_free=False).record("p", {"event": "view"}, RECEIVED, "u:1") is None
