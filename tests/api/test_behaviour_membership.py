"""The demo's behavioural audiences through the API, each checked against hand-written DuckDB SQL.

A workspace gets the demo generator's events for a few hundred profiles through ``POST
/v1/events``; every behavioural demo audience is refreshed and its members compared with what a
query written here by hand (never by our compiler) finds in the test's own copy of the events,
at the run's reference time, so a shared misreading of a window or of NULL cannot pass unseen.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import duckdb
import pytest

from audiences.cli import demo_events
from audiences.cli.demo import AUDIENCES
from audiences.engines.base import EventRecord
from tests.factories import Tenant
from tests.oracle import members, reference_time, refresh

PROFILES = 300
CHUNK = 2_000

BEHAVIOUR_SQL = {
    "frequent-buyers": (
        "SELECT id FROM events WHERE event = 'order' AND ts >= NOW - INTERVAL 90 DAY"
        " GROUP BY id HAVING count(*) >= 3"
    ),
    "lapsed-customers": (
        "SELECT id FROM events WHERE event = 'order' GROUP BY id"
        " HAVING max(ts) < NOW - INTERVAL 60 DAY"
    ),
    "big-spenders-30d": (
        "SELECT id FROM events WHERE event = 'order' AND ts >= NOW - INTERVAL 30 DAY"
        " GROUP BY id HAVING sum(amount) >= 200"
    ),
    "pricing-then-signup": (
        "SELECT DISTINCT p.id FROM events p JOIN events s ON s.id = p.id"
        " WHERE p.event = 'pricing_viewed' AND s.event = 'signed_up'"
        " AND s.ts > p.ts AND s.ts <= p.ts + INTERVAL 7 DAY"
    ),
    "never-ordered": (
        "SELECT id FROM events WHERE event = 'signed_up'"
        " EXCEPT SELECT id FROM events WHERE event = 'order'"
    ),
}
"""For each behavioural demo audience, the ids of its members as plain DuckDB SQL over
``events(id, event, ts, amount)``; ``NOW`` is the run's reference time."""


def behavioural_demo_audiences() -> dict[str, str]:
    """The demo's dynamic audiences whose rules read events, by key."""
    return {
        fields["key"]: fields["rule"]
        for _, fields in AUDIENCES
        if fields["kind"] == "dynamic" and fields["key"] in BEHAVIOUR_SQL
    }


def _oracle(records: list[EventRecord]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("CREATE TABLE events (id VARCHAR, event VARCHAR, ts TIMESTAMPTZ, amount DOUBLE)")
    con.executemany(
        "INSERT INTO events VALUES (?, ?, ?, ?)",
        [(r.external_id, r.name, r.timestamp, r.properties.get("amount")) for r in records],
    )
    return con


def _post(tenant: Tenant, records: list[EventRecord]) -> None:
    iterator = iter(records)
    while chunk := list(itertools.islice(iterator, CHUNK)):
        body = {
            "events": [
                {
                    "profile_id": r.external_id,
                    "event": r.name,
                    "timestamp": r.timestamp.isoformat(),
                    "properties": dict(r.properties),
                }
                for r in chunk
            ]
        }
        response = tenant.write.post("/v1/events", json=body)
        assert response.status_code in (200, 201), response.text
        assert response.json()["written"] == len(chunk)


def test_the_demo_has_behavioural_audiences_and_each_has_an_oracle() -> None:
    found = behavioural_demo_audiences()
    assert set(found) == set(BEHAVIOUR_SQL)
    assert all("event" in rule for rule in found.values())


@pytest.mark.parametrize("key", sorted(BEHAVIOUR_SQL))
def test_each_behavioural_demo_audience_holds_what_hand_written_sql_finds(
    tenant: Tenant, key: str
) -> None:
    anchor = datetime.now(UTC).replace(microsecond=0)
    records = list(demo_events.events(PROFILES, anchor=anchor))
    _post(tenant, records)
    body = {
        "key": key,
        "name": key,
        "kind": "dynamic",
        "rule": behavioural_demo_audiences()[key],
        "refresh_policy": {"mode": "manual"},
    }
    created = tenant.write.post("/v1/audiences", json=body)
    assert created.status_code == 201, created.text
    run = refresh(tenant.write, created.json()["id"])
    now = reference_time(run).astimezone(UTC).isoformat()
    query = BEHAVIOUR_SQL[key].replace("NOW", f"TIMESTAMPTZ '{now}'")
    expected = {row[0] for row in _oracle(records).execute(query).fetchall()}
    assert 0 < len(expected) < PROFILES, "the demo data tells members apart"
    assert set(members(tenant.write, created.json()["id"])) == expected
