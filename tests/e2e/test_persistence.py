"""A real server keeps membership and run history across a graceful restart and a SIGKILL.

One server ingests profiles, evaluates audiences in batch and by streaming writes, erases a
profile, and everything a client can read about membership is recorded: sizes, members, every
run, the members as of each run, the change feed, exports, a profile's audiences. The server is
stopped and started again, then killed and started again; each time the same reads must give
the same answers, the member sets must still equal the oracle's hand-written SQL, the profile
file read on its own must hold exactly the oracle's profiles, and work must carry on (the next
run is numbered after the last one).
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from tests.e2e.conftest import Server, cli, start_server, stop_server
from tests.oracle import (
    DEMO_TYPES,
    Oracle,
    declare,
    demo_records,
    ingest,
    members,
    pages,
    reference_time,
    refresh,
    to_json,
)

pytestmark = pytest.mark.e2e

PROFILES = 1_500
AUDIENCES = {
    "europe": ("country IN ('DE', 'FR', 'GB')", "country IN ('DE', 'FR', 'GB')", "manual"),
    "recent": (
        "last_seen > now() - INTERVAL 30 DAY",
        "last_seen > NOW - INTERVAL 30 DAY",
        "manual",
    ),
    "vip": ("list_contains(tags, 'vip')", "list_position(tags, 'vip') IS NOT NULL", "streaming"),
    "churned": ("churned", "churned", "streaming"),
    "vip-active": (
        "in_audience('vip') AND NOT in_audience('churned')",
        "list_position(tags, 'vip') IS NOT NULL AND churned IS NOT TRUE",
        "streaming",
    ),
}
"""key: (rule, the oracle's SQL, refresh mode); dependencies before their readers."""


@contextmanager
def running(data_dir: Path, database_url: str) -> Iterator[Server]:
    """A server on ``data_dir`` for the block, stopped gracefully after it."""
    server = start_server(data_dir, database_url, demo_profiles=0)
    try:
        yield server
    finally:
        stop_server(server)  # also reaps a killed one and closes its output pipe


def _client(server: Server, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=server.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


def _mint(server: Server, database_url: str, slug: str) -> str:
    args = ["keys", "create", "--workspace", slug, "--role", "admin", "--json"]
    made = cli(
        *args, "--data-dir", str(server.data_dir), env={"AUDIENCES_DATABASE_URL": database_url}
    )
    assert made.returncode == 0, made.stderr
    return str(json.loads(made.stdout)["token"])


def _snapshot(client: httpx.Client, ids: dict[str, str], sample: list[str]) -> dict[str, Any]:
    """Everything a client can read about membership, as plain data."""
    seen: dict[str, Any] = {"attributes": client.get("/v1/attributes").json()}
    for key, audience_id in ids.items():
        url = f"/v1/audiences/{audience_id}"
        runs = [run for page in pages(client, f"{url}/runs", limit=200) for run in page["data"]]
        seen[key] = {
            "audience": client.get(url).json(),
            "members": members(client, audience_id),
            "runs": runs,
            "each_run": [client.get(f"{url}/runs/{run['id']}").json() for run in runs],
            "as_of": {run["id"]: members(client, audience_id, as_of=run["id"]) for run in runs},
            "changes": list(pages(client, f"{url}/changes", since=runs[-1]["id"])),
            "export": client.get(f"{url}/export").text,
        }
    seen["profiles"] = {
        external_id: [
            _body(client, f"/v1/profiles/{external_id}{part}") for part in ("", "/audiences")
        ]
        for external_id in sample
    }
    return seen


def _settle(client: httpx.Client, ids: dict[str, str]) -> None:
    """Wait until no evaluation job of these audiences is queued or running."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        jobs = client.get("/v1/jobs", params={"kind": "evaluation", "limit": 200}).json()["data"]
        mine = [job for job in jobs if job["subject_id"] in ids.values()]
        if all(job["state"] in ("succeeded", "failed", "cancelled") for job in mine):
            return
        time.sleep(0.2)
    raise AssertionError("the evaluation jobs did not finish")


def _body(client: httpx.Client, url: str) -> Any:
    """The body of a successful read, or the status of a refused one (problems carry ids)."""
    response = client.get(url)
    return response.json() if response.status_code == 200 else response.status_code


def _stored_ids(data_dir: Path, probe: str) -> set[str]:
    """The external ids in the profile table holding ``probe``, read from the DuckDB file alone."""
    with duckdb.connect(str(data_dir / "profiles.duckdb"), read_only=True) as con:
        tables = [
            row[0]
            for row in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE table_name LIKE 'profiles_%'"
            ).fetchall()
        ]
        for table in tables:
            query = f'SELECT external_id FROM "{table}"'
            found = {row[0] for row in con.execute(query).fetchall()}
            if probe in found:
                return found
    return set()


def test_restarts_lose_no_membership_and_no_run_history(
    tmp_path_factory: pytest.TempPathFactory, e2e_database_url: str
) -> None:
    data_dir = tmp_path_factory.mktemp("persist")
    url = e2e_database_url
    if url.startswith("sqlite"):
        url = f"sqlite:///{data_dir / 'meta.db'}"
    oracle = Oracle(DEMO_TYPES)
    records = demo_records(PROFILES, anchor=datetime.now(UTC).replace(microsecond=0))
    with running(data_dir, url) as server:
        token = _mint(server, url, f"persist-{uuid.uuid4().hex[:8]}")
        with _client(server, token) as client:
            declare(client, DEMO_TYPES)
            ingest(client, oracle, records)
            ids = {}
            for key, (rule, _, mode) in AUDIENCES.items():
                policy = {"mode": mode}
                body = {"key": key, "name": key, "kind": "dynamic", "rule": rule}
                body["refresh_policy"] = policy
                created = client.post("/v1/audiences", json=body)
                assert created.status_code == 201, created.text
                ids[key] = created.json()["id"]
            _settle(client, ids)  # creating a dynamic audience queues its first evaluation
            for audience_id in ids.values():
                refresh(client, audience_id)
            _move(client, oracle, records[:60], ("user-000061", "user-000062"))
            last = {key: refresh(client, audience_id) for key, audience_id in ids.items()}
            for external_id in ("user-000001", "user-000100"):
                assert client.delete(f"/v1/profiles/{external_id}").status_code == 204
                oracle.delete(external_id)
            for key, (_, sql, _) in AUDIENCES.items():
                expected = oracle.select(sql, now=reference_time(last[key]))
                assert set(members(client, ids[key])) == expected, key
            sample = sorted(oracle.records)[::150]
            before = _snapshot(client, ids, sample)
    assert _stored_ids(data_dir, "user-000002") == set(oracle.records)

    # Graceful restart: every read answers as before. Then more work, and a SIGKILL right after.
    with running(data_dir, url) as server, _client(server, token) as client:
        assert _snapshot(client, ids, sample) == before
        _move(client, oracle, records[200:260], ("user-000263",))
        refresh(client, ids["europe"])
        assert client.delete("/v1/profiles/user-000002").status_code == 204
        oracle.delete("user-000002")
        for key, (_, sql, _) in AUDIENCES.items():
            if key != "recent":
                assert set(members(client, ids[key])) == oracle.select(sql), key
        before = _snapshot(client, ids, sample)
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(timeout=15)
    assert _stored_ids(data_dir, "user-000003") == set(oracle.records)

    with running(data_dir, url) as server, _client(server, token) as client:
        assert _snapshot(client, ids, sample) == before
        for key, audience_id in ids.items():
            run = refresh(client, audience_id)
            assert run["number"] == before[key]["runs"][0]["number"] + 1
            expected = oracle.select(AUDIENCES[key][1], now=reference_time(run))
            assert set(members(client, audience_id)) == expected, key
        back = {"attributes": {"tags": ["vip"], "churned": False}}
        assert client.put("/v1/profiles/user-000003", json=back).status_code == 200
        assert "user-000003" in members(client, ids["vip-active"])


def _move(
    client: httpx.Client,
    oracle: Oracle,
    records: list[tuple[str, dict[str, Any]]],
    churning: tuple[str, ...],
) -> None:
    """A batch that makes ``records`` French VIPs (every other one churned), then single writes
    that churn ``churning``: streaming audiences follow both."""
    changes = [
        (external_id, {"tags": ["vip"], "churned": n % 2 == 0, "country": "FR"})
        for n, (external_id, _) in enumerate(records)
    ]
    ingest(client, oracle, changes)
    for external_id in churning:
        churn = {"attributes": to_json({"churned": True})}
        assert client.put(f"/v1/profiles/{external_id}", json=churn).status_code == 200
        oracle.write(external_id, {"churned": True})
