"""Every remote command against a real server over TCP: human output, ``--json``, ``--quiet``
and the documented exit codes (0 ok, 1 failure, 2 usage, 3 not found, 4 conflict or
precondition, 5 server unavailable)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from audiences.cli import app
from audiences.cli import events as event_commands
from tests.e2e.conftest import Server, free_port

Run = Callable[..., Result]


@pytest.fixture
def cli(live_server: Server) -> Run:
    """Run a command against the module's server; check its exit code (0 unless told)."""
    runner = CliRunner()
    env = {"AUDIENCES_URL": live_server.base_url, "AUDIENCES_API_KEY": live_server.token}

    def run(*args: str, code: int = 0, stdin: str | None = None, **extra_env: str) -> Result:
        result = runner.invoke(app, list(args), input=stdin, env={**env, **extra_env})
        assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
        return result

    return run


def as_json(result: Result) -> Any:
    return json.loads(result.stdout)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_audiences_create_list_get_update_delete(cli: Run) -> None:
    key = unique("cli")
    made = as_json(cli("audiences", "create", key, "--name", "CLI", "--rule", "age > 30", "--json"))
    assert made["key"] == key and made["rule"] == "age > 30"
    shown = cli("audiences", "get", key)
    assert key in shown.stdout and "age > 30" in shown.stdout
    listed = as_json(cli("audiences", "list", "--all", "--json"))
    assert key in {item["key"] for item in listed}
    assert made["id"] in cli("audiences", "list", "--all", "--quiet").stdout.split()
    assert "key" in cli("audiences", "list", "--limit", "2").stdout
    cli("audiences", "update", key, "--name", "Renamed", "--if-match", "99", code=4)
    renamed = as_json(cli("audiences", "update", key, "--name", "Renamed", "--json"))
    assert renamed["name"] == "Renamed" and renamed["version"] == 2
    cli("audiences", "update", key, code=2)
    cli("audiences", "delete", key, "--if-match", str(renamed["version"]))
    missing = cli("audiences", "get", key, code=3)
    assert missing.stderr.startswith("error: ") and "hint: " in missing.stderr
    assert "Traceback" not in missing.stderr


def test_import_members_export_changes_runs(cli: Run, tmp_path: Path) -> None:
    key = unique("list")
    cli("audiences", "create", key, "--name", "List", "--kind", "static", "-q")
    ids = tmp_path / "ids.csv"
    ids.write_text("id\n" + "".join(f"m{number}\n" for number in range(500)) + "\n")
    done = cli("import", str(ids), "--into", key)
    assert "succeeded" in done.stdout and "added=500" in done.stdout
    changes = as_json(cli("changes", key, "--all", "--json"))
    assert len(changes) == 500 and changes[0]["change"] == "entered"
    replaced = as_json(cli("import", str(ids), "--into", key, "--mode", "replace", "--json"))
    assert replaced["state"] == "succeeded" and replaced["counts"]["unchanged"] == 500
    assert len(cli("members", key, "--all").stdout.split()) == 500
    first = cli("members", key, "--limit", "100")
    assert len(first.stdout.split()) == 100 and "--cursor" in first.stderr
    assert json.loads(cli("members", key, "--json", "--limit", "1").stdout) in {
        f"m{number}" for number in range(500)
    }
    out = tmp_path / "out.csv"
    cli("export", key, "-o", str(out))
    assert len(out.read_text().splitlines()) == 501
    assert cli("export", key, "--format", "ndjson").stdout.count("\n") == 500
    assert as_json(cli("changes", key, "--json")) == []
    runs = as_json(cli("runs", key, "--json"))
    assert runs[0]["size"] == 500
    cli("import", str(tmp_path / "missing.csv"), "--into", key, code=1)
    cli("members", unique("nothing"), code=3)


def test_refresh_explain_preview_evaluate(cli: Run) -> None:
    run = as_json(cli("refresh", "us-pro-over-30", "--wait", "--json"))
    assert run["status"] == "succeeded"
    assert "succeeded" in cli("refresh", "churned", "--wait").stdout
    cli("profiles", "put", "cli-ann", "-a", "country=US", "-a", "age=41", "-a", "plan=pro", "-q")
    tree = cli("explain", "us-pro-over-30", "cli-ann").stdout
    assert "country = 'US'" in tree and "true" in tree and "attributes read" in tree
    explained = as_json(cli("explain", "us-pro-over-30", "cli-ann", "--json"))
    assert explained["explanation"]["value"] is True
    member = cli("explain", "us-pro-over-30", "cli-ann", "-q").stdout.strip()
    assert member == json.dumps(explained["member"])
    preview = cli("preview", "age > 30 AND plan = 'pro'", "--sample", "2")
    assert "evaluation_mode" in preview.stdout
    compared = as_json(cli("preview", "age > 20", "--audience", "us-pro-over-30", "--json"))
    assert compared["entering"] is not None
    cli("preview", "agee > 3", code=1)
    evaluated = cli("evaluate", "cli-ann").stdout
    assert "us-pro-over-30" in evaluated
    assert as_json(cli("evaluate", "--attr", "country=FR", "--json"))


def test_external_audience_create_and_sync(cli: Run) -> None:
    key = unique("sql")
    query = "SELECT external_id FROM profiles WHERE external_id LIKE 'user-0%'"  # the demo's
    source = json.dumps({"type": "sql", "query": query})
    made = as_json(cli("audiences", "create", key, "--name", "All", "--kind", "external",
                       "--source", source, "--json"))  # fmt: skip
    assert made["source"]["type"] == "sql" and made["sync"]["status"] == "syncing"
    job = as_json(cli("audiences", "sync", key, "--wait", "--json"))
    assert (job["handler"], job["state"]) == ("membership.sync", "succeeded")
    shown = as_json(cli("audiences", "get", key, "--json"))
    assert shown["sync"]["status"] == "synced" and shown["size"] == 100
    queued = as_json(cli("audiences", "sync", key, "--json"))
    assert queued["handler"] == "membership.sync"
    broken = unique("broken")
    bad = json.dumps({"type": "sql", "query": "SELECT external_id FROM profiles WHERE nope"})
    cli("audiences", "create", broken, "--name", "B", "--kind", "external", "--source", bad)
    failed = cli("audiences", "sync", broken, "--wait", code=1)
    assert "engine_query_failed" in failed.stderr
    cli("audiences", "sync", "crm-vip", code=4)  # the demo's pushed list is not synced
    cli("audiences", "create", unique("x"), "--name", "X", "--kind", "external",
        "--source", '{"type": "sql", "query": "DROP TABLE profiles"}', code=1)  # fmt: skip
    # --source replaces the source whole: its type may change (a merge patch of the stored
    # SQL source would have kept its query beside the push source's fields).
    pushed = json.dumps({"type": "push", "name": "crm"})
    moved = as_json(cli("audiences", "update", key, "--source", pushed, "--json"))
    assert moved["source"] == {"type": "push", "name": "crm", "external_id": None}
    cli("audiences", "update", key, "--source", "[1]", code=2)


def test_evaluate_with_events_from_a_file_or_stdin(cli: Run, tmp_path: Path) -> None:
    rule = "count(*) FILTER (WHERE event = 'cli_order' AND timestamp > now() - INTERVAL 1 DAY) >= 2"
    key = unique("twice")
    cli("audiences", "create", key, "--name", "Twice", "--rule", rule, "-q")
    lines = '{"event": "cli_order"}\n\n{"event": "cli_order", "properties": {}}\n'
    path = tmp_path / "events.ndjson"
    path.write_text(lines)

    def member(result: Result) -> bool:
        return next(v["member"] for v in as_json(result) if v["key"] == key)

    assert member(cli("evaluate", "--events", str(path), "--json"))
    assert member(cli("evaluate", "--events", "-", "--json", stdin=lines))
    assert not member(cli("evaluate", "--events", "-", "--json", stdin=lines.split("\n")[0]))
    path.write_text('{"event": "cli_order"}\nnot json\n')
    assert "line 2 is not JSON" in cli("evaluate", "--events", str(path), code=2).stderr
    path.write_text('{"event": "cli_order"}\n' * 1_001)
    assert "more than 1,000" in cli("evaluate", "--events", str(path), code=2).stderr
    cli("evaluate", "--events", str(tmp_path / "missing.ndjson"), code=2)
    path.write_text('{"event": "cli_order", "timestamp": "yesterday"}\n')
    assert "validation_failed" in cli("evaluate", "--events", str(path), code=1).stderr


def test_profiles_attributes_workspace_groups_keys_jobs(cli: Run) -> None:
    assert as_json(cli("profiles", "put", "cli-bob", "-a", "age=7", "--json"))["id"] == "cli-bob"
    assert as_json(cli("profiles", "get", "cli-bob", "--json"))["attributes"]["age"] == 7
    assert "cli-bob" not in cli("profiles", "audiences", "cli-bob").stderr
    cli("profiles", "delete", "cli-bob")
    cli("profiles", "get", "cli-bob", code=3)
    schema = as_json(cli("attributes", "list", "--json"))
    assert {"name": "age", "type": "integer"}.items() <= schema[
        [a["name"] for a in schema].index("age")
    ].items()
    assert "integer" in cli("attributes", "get", "age").stdout
    cli("attributes", "declare", "cli_score", "--type", "float")
    cli("attributes", "declare", "cli_score", "--type", "string", code=4)
    settings = {"strict_attributes": False, "event_retention_days": None}
    assert as_json(cli("workspace", "get", "--json")) == settings
    days = "36500"  # a century: the scheduler's expiry drops nothing other tests wrote
    kept = as_json(cli("workspace", "set", "--event-retention-days", days, "--json"))
    assert kept == {"strict_attributes": False, "event_retention_days": 36500}
    strict = as_json(cli("workspace", "set", "--strict-attributes", "--json"))
    assert strict == {"strict_attributes": True, "event_retention_days": 36500}
    cli("workspace", "set", "--infer-attributes", "--keep-events-forever", "-q")
    assert as_json(cli("workspace", "get", "--json")) == settings
    cli("workspace", "set", code=2)
    group = as_json(cli("groups", "create", unique("g"), "--description", "d", "--json"))
    assert group["id"] in cli("groups", "list", "--all", "-q").stdout
    assert "audience_count" in cli("groups", "get", group["id"]).stdout
    cli("groups", "update", group["id"], "--name", unique("h"), "-q")
    cli("groups", "delete", group["id"])
    token = cli("keys", "create", "--role", "read", "--name", "cli-robot").stdout.strip()
    assert token.startswith("aud_")
    keys = as_json(cli("keys", "list", "--json"))
    robot = next(key for key in keys if key["name"] == "cli-robot")
    assert "cli-robot" in cli("keys", "get", robot["id"]).stdout
    cli("audiences", "create", unique("x"), "--name", "x", code=1, AUDIENCES_API_KEY=token)
    cli("keys", "revoke", robot["id"])
    jobs = as_json(cli("jobs", "list", "--all", "--json"))
    finished = next(job for job in jobs if job["state"] == "succeeded")
    assert as_json(cli("jobs", "get", finished["id"], "--json"))["id"] == finished["id"]
    assert "succeeded" in cli("jobs", "wait", finished["id"]).stdout
    assert cli("jobs", "errors", finished["id"]).stdout.startswith("row,line,code,message")
    cli("jobs", "cancel", finished["id"], code=4)


def test_rules_check_offline(cli: Run, tmp_path: Path) -> None:
    schema = tmp_path / "schema.json"
    schema.write_text(cli("attributes", "list", "--json").stdout)
    good = tmp_path / "good.txt"
    good.write_text("# rules\nage > 30\n\ncountry IN ('US', 'CA')\n")
    assert cli("rules", "check", str(good), "--schema", str(schema)).stdout.count("ok") == 2
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"typo": "agee > 3", "fine": "age > 3"}))
    result = cli("rules", "check", str(bad), "--schema", str(schema), "--json", code=1)
    verdicts = {item["name"]: item for item in as_json(result)}
    assert verdicts["fine"]["valid"] and not verdicts["typo"]["valid"]
    assert verdicts["typo"]["errors"][0]["code"] == "rule_unknown_attribute"


def test_bad_key_bad_url_and_config_profiles(cli: Run, live_server: Server, tmp_path: Path) -> None:
    wrong = cli("audiences", "list", code=1, AUDIENCES_API_KEY="aud_wrong")
    assert "invalid_api_key" in wrong.stderr and "--key" in wrong.stderr
    down = cli("audiences", "list", code=5, AUDIENCES_URL=f"http://127.0.0.1:{free_port()}")
    assert down.stderr.startswith("error: no answer from") and "Traceback" not in down.stderr
    config = tmp_path / "config.toml"
    config.write_text(
        f'[profiles.default]\nurl = "http://127.0.0.1:{free_port()}"\n\n'
        f'[profiles.live]\nurl = "{live_server.base_url}"\nkey = "{live_server.token}"\n'
    )
    env = {"AUDIENCES_CONFIG": str(config), "AUDIENCES_URL": "", "AUDIENCES_API_KEY": ""}
    assert cli("--profile", "live", "audiences", "list", "-q", **env).stdout
    cli("audiences", "list", code=5, **env)
    cli("--profile", "nope", "audiences", "list", code=2, **env)


def test_events_send_in_batches_with_refusals_list_and_import(
    cli: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(event_commands, "MAX_EVENTS", 2)  # three calls for five valid lines
    who = unique("ev")
    visit = {"profile_id": who, "event": "cli_visit", "properties": {"page": "/"}}
    lines = [
        {**visit, "timestamp": f"2026-01-0{day}T10:00:00Z", "event_id": f"{who}-{day}"}
        for day in range(1, 5)
    ]
    lines.insert(2, {**visit, "properties": {"amount": "lots"}})  # line 3: wrong type
    text = "\n".join(json.dumps(line) for line in lines)
    text += '\n\n{"profile_id": "x"}\n{oops\n' + json.dumps({**visit, "event": "cli_buy"})
    events = tmp_path / "events.ndjson"
    events.write_text(text + "\n")
    sent = cli("events", "send", str(events), code=1)
    assert "written" in sent.stdout and "property_type" in sent.stdout
    assert "error: 3 event(s) refused" in sent.stderr
    again = as_json(cli("events", "send", str(events), "--json", code=1))
    assert (again["written"], again["duplicates"], again["failed"]) == (1, 4, 3)
    assert [item["line"] for item in again["refusals"]] == [3, 7, 8]
    assert {item["code"] for item in again["refusals"]} == {
        "malformed_json", "events_invalid", "property_type_mismatch"
    }  # fmt: skip
    piped = json.dumps({**visit, "event_id": f"{who}-9"})
    assert cli("events", "send", "-", "-q", stdin=piped + "\n").stdout == ""
    cli("events", "send", str(tmp_path / "missing.ndjson"), code=1)
    shown = cli("events", "list", who).stdout
    assert "cli_visit" in shown and "cli_buy" in shown
    listed = as_json(cli("events", "list", who, "--all", "--json"))
    assert len(listed) == 7 and listed[-1]["event_id"] == f"{who}-1"
    buys = as_json(cli("events", "list", who, "--event", "cli_buy", "--json"))
    assert [item["event"] for item in buys] == ["cli_buy", "cli_buy"]
    first = cli("events", "list", who, "--limit", "2", "-q")
    assert len(first.stdout.split()) <= 2
    assert "--cursor" in cli("events", "list", who, "--limit", "2").stderr
    cli("events", "list", unique("nobody"), code=3)
    rows = "".join(f"{who}-f,cli_file,2026-02-01T00:00:{n:02}Z,{n},{who}-f{n}\n" for n in range(30))
    upload = tmp_path / "events.csv"  # with event ids: a second import stores nothing again
    upload.write_text("profile_id,event,timestamp,amount,event_id\n" + rows)
    done = cli("events", "import", str(upload))
    assert "succeeded" in done.stdout and "written=30" in done.stdout
    replayed = as_json(cli("events", "import", str(upload), "--json"))  # the same upload:
    assert replayed["counts"]["written"] == 30  # the first import's job answers again
    anew = as_json(cli("events", "import", str(upload), "--again", "--json"))
    assert anew["id"] != replayed["id"] and anew["counts"]["duplicates"] == 30
    queued = cli("events", "import", str(upload), "--again", "--no-wait", "-q").stdout.strip()
    assert as_json(cli("jobs", "wait", queued, "--json"))["counts"]["duplicates"] == 30
    cli("events", "import", str(tmp_path / "missing.csv"), code=1)


def test_event_properties_and_event_names(cli: Run) -> None:
    name = f"cli_{uuid.uuid4().hex[:8]}"
    declared = as_json(cli("event-properties", "declare", name, "--type", "float", "--json"))
    assert declared["type"] == "float" and declared["inferred"] is False
    cli("event-properties", "declare", name, "--type", "string", code=4)
    assert "float" in cli("event-properties", "get", name).stdout
    cli("event-properties", "get", "cli_missing_property", code=3)
    assert name in cli("event-properties", "list", "-q").stdout.split()
    assert name in {item["name"] for item in as_json(cli("event-properties", "list", "--json"))}
    assert "inferred" in cli("event-properties", "list").stdout
    event = f"cli_named_{uuid.uuid4().hex[:6]}"
    cli("events", "send", "-", "-q", stdin=json.dumps({"profile_id": "n1", "event": event}))
    assert event in cli("event-names", "list", "-q").stdout.split()
    names = {item["name"]: item for item in as_json(cli("event-names", "list", "--json"))}
    assert names[event]["count"] == 1
    assert "first_seen_at" in cli("event-names", "list").stdout
