"""Independent answers for membership tests: hand-written DuckDB SQL over the records a test wrote.

The :class:`Oracle` keeps its own model of the profiles a test stored (merged the way the API
documents: keys not sent are kept, ``None`` clears one, a deleted profile is gone) and answers
"who satisfies this WHERE clause" by loading that model into an in-memory DuckDB table and
running SQL written by hand in the test. It never touches the rule compiler or the engine, so
an answer that agrees with the API is evidence, not an echo.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, date, datetime
from typing import Any, Protocol

import duckdb
import httpx

from audiences.cli.demo_profiles import SCHEMA as DEMO_SCHEMA
from audiences.cli.demo_profiles import profiles

DUCKDB_TYPES = {
    "string": "VARCHAR",
    "integer": "BIGINT",
    "float": "DOUBLE",
    "boolean": "BOOLEAN",
    "date": "DATE",
    "timestamp": "TIMESTAMPTZ",
    "string_list": "VARCHAR[]",
    "number_list": "DOUBLE[]",
}
DEMO_TYPES = {name: kind.value for name, kind in DEMO_SCHEMA.items()}
CHUNK = 1_000
"""Profiles per batch call: well under the 1 MiB body limit for demo records."""


class Http(Protocol):
    """What the helpers need of a client: the in-process ``ApiClient`` or an ``httpx.Client``."""

    def get(self, url: str, **kwargs: Any) -> httpx.Response: ...

    def post(self, url: str, **kwargs: Any) -> httpx.Response: ...

    def put(self, url: str, **kwargs: Any) -> httpx.Response: ...


class Oracle:
    """The test's own copy of the profiles, and plain DuckDB queries over it."""

    def __init__(self, schema: Mapping[str, str]) -> None:
        self.schema = dict(schema)
        self.records: dict[str, dict[str, Any]] = {}
        self._con: duckdb.DuckDBPyConnection | None = None

    def write(self, external_id: str, attributes: Mapping[str, Any]) -> None:
        """Merge attributes into a profile as the API does (``None`` clears a key)."""
        merged = {**self.records.get(external_id, {}), **attributes}
        self.records[external_id] = {k: v for k, v in merged.items() if v is not None}
        self._con = None

    def delete(self, external_id: str) -> None:
        """Forget a profile."""
        del self.records[external_id]
        self._con = None

    def select(self, where: str, *, now: datetime | None = None) -> set[str]:
        """The ids of the profiles for which ``where`` is TRUE; ``NOW`` in it is ``now``."""
        if "NOW" in where:
            assert now is not None, "a clock predicate needs the run's reference time"
            where = where.replace("NOW", f"TIMESTAMPTZ '{now.astimezone(UTC).isoformat()}'")
        rows = self._table().execute(f"SELECT id FROM profiles WHERE {where}").fetchall()
        return {row[0] for row in rows}

    def _table(self) -> duckdb.DuckDBPyConnection:
        if self._con is not None:
            return self._con
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        names = list(self.schema)
        columns = ", ".join(f'"{n}" {DUCKDB_TYPES[self.schema[n]]}' for n in names)
        con.execute(f"CREATE TABLE profiles (id VARCHAR, {columns})")
        casts = ", ".join(f"unnest(?::{DUCKDB_TYPES[self.schema[n]]}[])" for n in names)
        ids = list(self.records)
        values = [[self.records[i].get(n) for i in ids] for n in names]
        if ids:
            con.execute(
                f"INSERT INTO profiles SELECT unnest(?::VARCHAR[]), {casts}", [ids, *values]
            )
        self._con = con
        return con


def demo_records(count: int, *, anchor: datetime) -> list[tuple[str, dict[str, Any]]]:
    """The demo generator's profiles, with NULLs sprinkled in so three-valued logic is tested.

    Every 7th profile has no ``churned``, every 11th no ``age``, every 13th no ``tags``.
    """
    every = {"churned": 7, "age": 11, "tags": 13}
    made = []
    for number, (external_id, attributes) in enumerate(profiles(count, anchor=anchor), start=1):
        dropped = {name for name, n in every.items() if number % n == 0}
        made.append((external_id, {k: v for k, v in attributes.items() if k not in dropped}))
    return made


def to_json(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Attributes as a JSON body carries them (dates and timestamps in ISO 8601)."""
    return {
        name: value.isoformat() if isinstance(value, date | datetime) else value
        for name, value in attributes.items()
    }


def declare(client: Http, schema: Mapping[str, str]) -> None:
    """Declare every attribute of ``schema`` (201 when new, 200 when already declared)."""
    for name, kind in schema.items():
        response = client.put(f"/v1/attributes/{name}", json={"type": kind})
        assert response.status_code in (200, 201), response.text


def ingest(client: Http, oracle: Oracle, records: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
    """Upsert records through ``POST /v1/profiles/batch`` and into the oracle's model."""
    iterator = iter(records)
    while chunk := list(itertools.islice(iterator, CHUNK)):
        body = {"profiles": [{"id": i, "attributes": to_json(a)} for i, a in chunk]}
        response = client.post("/v1/profiles/batch", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["written"] == len(chunk)
        for external_id, attributes in chunk:
            oracle.write(external_id, attributes)


def pages(client: Http, url: str, **params: Any) -> Iterator[dict[str, Any]]:
    """Every page of a cursor-paged membership listing."""
    cursor = None
    while True:
        response = client.get(url, params={**params, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.text
        page = response.json()
        assert page["has_more"] == (page["next_cursor"] is not None)
        yield page
        if not page["has_more"]:
            return
        cursor = page["next_cursor"]


def members(client: Http, audience_id: str, **params: Any) -> list[str]:
    """Every member's external id, through the paged members listing."""
    url = f"/v1/audiences/{audience_id}/members"
    return [item["id"] for page in pages(client, url, limit=200, **params) for item in page["data"]]


def refresh(client: Http, audience_id: str) -> dict[str, Any]:
    """Run a batch evaluation now and return the run."""
    response = client.post(f"/v1/audiences/{audience_id}/refresh")
    assert response.status_code == 202, response.text
    return dict(response.json())


def reference_time(run: Mapping[str, Any]) -> datetime:
    """The ``now()`` a batch run used: it is the run's start."""
    return datetime.fromisoformat(str(run["started_at"]))


def exported(client: Http, audience_id: str) -> list[str]:
    """Every member's external id through the NDJSON export: one request for the whole set."""
    response = client.get(f"/v1/audiences/{audience_id}/export", params={"format": "ndjson"})
    assert response.status_code == 200, response.text
    return [json.loads(line)["id"] for line in response.text.splitlines()]
