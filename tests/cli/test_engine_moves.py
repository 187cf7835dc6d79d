"""``audiences engines move`` end to end: a DuckDB data folder with two workspaces moved to a
PostgreSQL schema, run again (resumed and checked), a target already holding a workspace
refused with its code, and a move onto itself refused."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from audiences.cli import app
from audiences.config import Settings
from audiences.engines.duckdb import DuckDBEngine
from audiences.services import workspaces
from audiences.store.db import make_engine, make_session_factory
from audiences.store.migrate import migrate
from tests.engines.kinds import Store, opened
from tests.engines.test_portable import every_event, fill


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A data folder: SQLite metadata naming workspaces ``acme`` and ``beta``, and DuckDB
    profiles and events for both (gaps in their pids, events with and without ids)."""
    data = tmp_path / "data"
    metadata = make_engine(Settings(data_dir=data).metadata_url)
    migrate(metadata)
    with make_session_factory(metadata).begin() as session:
        ids = [workspaces.ensure(session, slug=slug).id for slug in ("acme", "beta")]
    metadata.dispose()
    engine = DuckDBEngine(data)
    fill(engine, people=20, workspace=ids[0])
    fill(engine, people=9, workspace=ids[1])
    engine.close()
    return data


@pytest.fixture
def target(tmp_path: Path) -> Iterator[Store]:
    with opened("postgres", tmp_path / "pg") as store:
        yield store


def _move(folder: Path, store: Store, *more: str) -> tuple[int, str, str]:
    settings = store.settings
    argv = [
        "engines", "move", "--to", "postgres",
        "--to-url", settings["profile_engine_url"],
        "--to-schema", settings["profile_engine_schema"],
        "--data-dir", str(folder), "--batch-size", "4", *more,
    ]  # fmt: skip
    result = CliRunner().invoke(app, argv)
    return result.exit_code, result.stdout, result.stderr


def test_the_command_moves_every_workspace_and_resumes(folder: Path, target: Store) -> None:
    code, out, err = _move(folder, target, "--json")
    assert code == 0, err
    report = json.loads(out)
    moved = {(w["profiles"], w["events"], w["resumed"]) for w in report["workspaces"]}
    assert moved == {(18, 34, False), (7, 34, False)}
    assert report["route"].startswith("duckdb ") and " -> postgres " in report["route"]
    source, copy = DuckDBEngine(folder), target.open()
    try:
        for workspace in report["workspaces"]:
            ws = workspace["workspace_id"]
            assert copy.export_profiles(ws, after_pid=0, limit=100) == source.export_profiles(  # type: ignore[attr-defined]
                ws, after_pid=0, limit=100
            )
            assert every_event(copy, ws) == every_event(source, ws)
    finally:
        source.close()
    again = _move(folder, target, "--workspace", "acme")
    assert again[0] == 0, again[2]
    assert "18 profiles, 34 events moved and checked" in again[1] and "resumed" in again[1]


def test_a_target_holding_the_workspace_is_refused(folder: Path, target: Store) -> None:
    code, _, err = _move(folder, target, "--workspace", "beta", "--checkpoints", str(folder / "a"))
    assert code == 0, err
    code, _, err = _move(folder, target, "--workspace", "beta", "--checkpoints", str(folder / "b"))
    assert code == 1
    assert "(engine_move_target_not_empty)" in err


def test_an_unknown_workspace_and_a_move_onto_itself_are_refused(
    folder: Path, target: Store
) -> None:
    code, _, err = _move(folder, target, "--workspace", "nobody")
    assert code == 1 and "(workspace_not_found)" in err
    result = CliRunner().invoke(
        app, ["engines", "move", "--to", "duckdb", "--data-dir", str(folder)]
    )
    assert result.exit_code == 2 and "the same engine" in result.stderr


def test_a_killed_move_is_resumed_by_running_it_again(folder: Path, target: Store) -> None:
    """The command killed (SIGKILL) once its checkpoint shows progress, then run again: every
    profile and event is in the target once."""
    settings = target.settings
    argv = [
        sys.executable, "-m", "audiences", "engines", "move", "--to", "postgres",
        "--to-url", settings["profile_engine_url"],
        "--to-schema", settings["profile_engine_schema"],
        "--data-dir", str(folder), "--workspace", "acme", "--batch-size", "1",
    ]  # fmt: skip
    checkpoints = folder / "moves"
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            saved = [json.loads(p.read_text()) for p in checkpoints.glob("*.json")]
            if saved and saved[0]["last_pid"] >= 3:
                break
            time.sleep(0.01)
        assert process.poll() is None, "the move ended before it could be killed"
        process.kill()
    finally:
        process.wait(timeout=30)
        assert process.stdout and process.stderr
        process.stdout.close()
        process.stderr.close()
    saved = json.loads(next(checkpoints.glob("*.json")).read_text())
    assert saved["phase"] == "profiles" and saved["last_pid"] < 21
    code, out, err = _move(folder, target, "--workspace", "acme", "--json")
    assert code == 0, err
    [report] = json.loads(out)["workspaces"]
    assert (report["profiles"], report["events"], report["resumed"]) == (18, 34, True)
    source, copy = DuckDBEngine(folder), target.open()
    try:
        ws = report["workspace_id"]
        assert copy.export_profiles(ws, after_pid=0, limit=100) == source.export_profiles(  # type: ignore[attr-defined]
            ws, after_pid=0, limit=100
        )
        assert every_event(copy, ws) == every_event(source, ws)
    finally:
        source.close()


def test_the_command_moves_into_clickhouse(folder: Path, tmp_path: Path) -> None:
    """Into ClickHouse in process (chdb), then back out of it into a new DuckDB folder. chdb
    binds a process to one folder, so the target is a fresh database in the process's own."""
    with opened("clickhouse", tmp_path) as store:
        _round_trip(folder, tmp_path, str(store.settings["profile_engine_url"]))


def _round_trip(folder: Path, tmp_path: Path, chdb: str) -> None:
    argv = ["engines", "move", "--data-dir", str(folder), "--workspace", "acme", "--json"]
    there = CliRunner().invoke(app, [*argv, "--to", "clickhouse", "--to-url", chdb])
    assert there.exit_code == 0, there.stderr
    [report] = json.loads(there.stdout)["workspaces"]
    assert (report["profiles"], report["events"]) == (18, 34)
    back = CliRunner().invoke(
        app,
        [*argv, "--from", "clickhouse", "--from-url", chdb, "--to", "duckdb", "--to-url",
         str(tmp_path / "again"), "--checkpoints", str(tmp_path / "back")],
    )  # fmt: skip
    assert back.exit_code == 0, back.stderr
    source, copy = DuckDBEngine(folder), DuckDBEngine(tmp_path / "again")
    try:
        ws = report["workspace_id"]
        assert copy.export_profiles(ws, after_pid=0, limit=100) == source.export_profiles(
            ws, after_pid=0, limit=100
        )
        assert every_event(copy, ws) == every_event(source, ws)
        assert copy.last_pid(ws) == source.last_pid(ws)
    finally:
        source.close()
        copy.close()
