"""``audiences destinations`` against a real server whose file destinations may write to a
real S3-compatible server (moto's, on 127.0.0.1): a scheduled full list lands as an object,
a test file proves the bucket, and a missing bucket or a refused path exit as documented."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from audiences.cli import app
from tests.e2e.conftest import Server, start_server, stop_server
from tests.s3_server import KEY_ID, REGION, SECRET, S3Server, serving


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    """One S3-compatible server for the module."""
    with serving() as server:
        yield server


@pytest.fixture(scope="module")
def s3_live(
    tmp_path_factory: pytest.TempPathFactory, database_url: str, s3: S3Server
) -> Iterator[Server]:
    """A real ``audiences serve --demo`` whose file destinations write to ``s3``, with a
    scheduler that looks for due writes every second."""
    folder = tmp_path_factory.mktemp("s3-live")
    url = f"sqlite:///{folder / 'audiences.db'}" if database_url.startswith("sqlite") else None
    running = start_server(
        folder / "data",
        url or database_url,
        demo_profiles=100,
        settings={
            "AUDIENCES_SCHEDULER_SECONDS": "1",
            "AUDIENCES_DESTINATION_S3_BUCKETS": "*",
            "AUDIENCES_DESTINATION_S3_ENDPOINT_URL": s3.endpoint,
            "AUDIENCES_DESTINATION_S3_REGION": REGION,
            "AUDIENCES_DESTINATION_S3_ACCESS_KEY_ID": KEY_ID,
            "AUDIENCES_DESTINATION_S3_SECRET_ACCESS_KEY": SECRET,
        },
    )
    yield running
    stop_server(running)


def run(server: Server, *args: str, code: int = 0) -> Result:
    """Run a command against ``server``; check its exit code."""
    env = {"AUDIENCES_URL": server.base_url, "AUDIENCES_API_KEY": server.token}
    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    return result


def as_json(result: Result) -> Any:
    return json.loads(result.stdout)


def test_a_scheduled_full_list_lands_in_a_bucket(s3_live: Server, s3: S3Server) -> None:
    """A ``full`` destination on ``s3://`` writes the audience's every member as one object
    on its own (the server's scheduler and workers), and says so in its delivery log."""
    bucket = s3.make_bucket(f"cli-{uuid.uuid4().hex[:8]}")
    made = as_json(
        run(
            s3_live, "destinations", "create", "crm", "--path", f"s3://{bucket}/crm/daily",
            "--audience", "us-pro-over-30", "--format", "ndjson", "--json",
        )
    )  # fmt: skip
    assert (made["kind"], made["path"], made["mode"]) == (
        "file",
        f"s3://{bucket}/crm/daily",
        "full",
    )
    deadline = time.monotonic() + 30
    while not s3.keys(bucket, "crm/daily/"):
        assert time.monotonic() < deadline, "the scheduled write did not land"
        time.sleep(0.2)
    [key] = s3.keys(bucket, "crm/daily/")
    assert key.startswith("crm/daily/us-pro-over-30-") and key.endswith("-full.ndjson")
    size = as_json(run(s3_live, "audiences", "get", "us-pro-over-30", "--json"))["size"]
    assert len(s3.rows(bucket, key)) == size > 0
    log = as_json(run(s3_live, "destinations", "deliveries", made["id"], "--json"))
    assert [(d["type"], d["status"]) for d in log] == [("file.full", "delivered")]
    tested = as_json(run(s3_live, "destinations", "test", made["id"], "--json"))
    assert tested["delivered"] is True
    assert [k for k in s3.keys(bucket, "crm/daily/") if k.startswith("crm/daily/test-")]


def test_a_missing_bucket_and_a_refused_path_exit_as_documented(
    s3_live: Server, s3: S3Server
) -> None:
    """``destinations test`` on a bucket that does not exist exits 1 with the code in the
    delivery's error; a path the server refuses exits 1 naming its code."""
    missing = as_json(
        run(s3_live, "destinations", "create", "missing", "--path", "s3://no-such-bucket-cli/x",
            "--mode", "changes", "--json")
    )  # fmt: skip
    failed = run(s3_live, "destinations", "test", missing["id"], "--json", code=1)
    assert as_json(failed)["delivery"]["last_error"].startswith("s3_bucket_not_found: ")
    refused = run(s3_live, "destinations", "create", "bad", "--path", "s3://Bad_Bucket/x", code=1)
    assert "path_not_allowed" in refused.stderr, refused.stderr


def test_options_that_contradict_are_refused_and_an_update_changes_what_is_followed(
    s3_live: Server,
) -> None:
    """Two subscriptions at once, or file options for a webhook, exit 2 and create nothing;
    ``update`` moves a destination to every audience with attributes and turns it off;
    ``list --disabled`` finds it; an unknown id points at ``destinations list``."""
    hook = ("destinations", "create", "cli-hook", "--url", "https://hooks.example.com/in")
    contradicting = (
        ("--audience", "us-pro-over-30", "--group", "g1"),
        ("--format", "ndjson"),
        ("--every", "60"),
    )
    for extra in contradicting:
        run(s3_live, *hook, *extra, code=2)
    assert not as_json(run(s3_live, "destinations", "list", "--q", "cli-hook", "--json"))
    made = as_json(run(s3_live, *hook, "--audience", "us-pro-over-30", "--json"))
    run(s3_live, "destinations", "update", made["id"], "--all-audiences", "--group", "g", code=2)
    changed = as_json(
        run(s3_live, "destinations", "update", made["id"], "--all-audiences", "--attribute",
            "country", "--disable", "--json")
    )  # fmt: skip
    assert (changed["subscription"], changed["attributes"], changed["enabled"]) == (
        {"all": True},
        ["country"],
        False,
    )
    off = as_json(run(s3_live, "destinations", "list", "--disabled", "--json"))
    on = as_json(run(s3_live, "destinations", "list", "--enabled", "--json"))
    assert made["id"] in {d["id"] for d in off} and made["id"] not in {d["id"] for d in on}
    cleared = as_json(
        run(s3_live, "destinations", "update", made["id"], "--no-attributes", "--json")
    )
    assert cleared["attributes"] == []
    missing = run(s3_live, "destinations", "get", "no-such-destination", code=3)
    assert "audiences destinations list" in missing.stderr, missing.stderr


def test_one_delivery_shows_its_attempts(s3_live: Server, s3: S3Server) -> None:
    """``destinations delivery`` shows a test file's attempt and payload."""
    bucket = s3.make_bucket(f"cli-{uuid.uuid4().hex[:8]}")
    made = as_json(
        run(s3_live, "destinations", "create", "one-delivery", "--path", f"s3://{bucket}/one",
            "--mode", "changes", "--json")
    )  # fmt: skip
    tested = as_json(run(s3_live, "destinations", "test", made["id"], "--json"))
    delivery_id = tested["delivery"]["id"]
    shown = as_json(run(s3_live, "destinations", "delivery", made["id"], delivery_id, "--json"))
    assert shown["id"] == delivery_id and shown["status"] == "delivered"
    assert [attempt["error"] for attempt in shown["attempt_log"]] == [None]
    # A time without an offset is read as UTC; test messages are never sent again.
    later = run(s3_live, "destinations", "redeliver", made["id"], "--since",
                "2099-01-01T00:00:00", "--json")  # fmt: skip
    assert as_json(later) == {"redelivered": 0}
    log = as_json(run(s3_live, "destinations", "deliveries", made["id"], "--json"))
    again = run(s3_live, "destinations", "redeliver", made["id"], "--since",
                "2000-01-01T00:00:00", "--json")  # fmt: skip
    assert as_json(again) == {"redelivered": sum(d["type"] != "destination.test" for d in log)}
