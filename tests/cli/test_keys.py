"""``audiences keys create``: a usable token in JSON or plain text, workspaces made on demand."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from audiences.cli import app
from audiences.services.api_keys import authenticate
from audiences.store.db import make_engine, make_session_factory

runner = CliRunner()


def test_keys_create_json_prints_one_object_with_the_token(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "keys",
            "create",
            "--workspace",
            "acme",
            "--role",
            "write",
            "--json",
            "--data-dir",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    created = json.loads(result.stdout)
    assert created["workspace"] == "acme"
    assert created["role"] == "write"
    engine = make_engine(f"sqlite:///{tmp_path / 'audiences.db'}")
    try:
        with make_session_factory(engine)() as session:
            caller = authenticate(session, created["token"])
        assert caller.workspace_slug == "acme"
        assert caller.role.value == "write"
    finally:
        engine.dispose()


def test_keys_create_plain_prints_the_token_alone(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["keys", "create", "--workspace", "acme", "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 0
    assert result.stdout.strip().startswith("aud_")
    assert len(result.stdout.strip().splitlines()) == 1


def test_bad_workspace_or_role_fails_clearly(tmp_path: Path) -> None:
    base = [sys.executable, "-m", "audiences", "keys", "create", "--data-dir", str(tmp_path)]
    bad_role = subprocess.run(
        [*base, "--workspace", "acme", "--role", "owner"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad_role.returncode == 2
    assert "owner" in bad_role.stderr
    bad_slug = subprocess.run(
        [*base, "--workspace", "Not A Slug"], capture_output=True, text=True, check=False
    )
    assert bad_slug.returncode == 1
    assert bad_slug.stderr.startswith("error: a workspace slug is")
    assert "Traceback" not in bad_slug.stderr


def test_the_files_a_command_creates_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    """Issue #11: the metadata database was created readable by every user of the machine."""
    data_dir = tmp_path / "data"
    command = ["keys", "create", "--workspace", "acme", "--data-dir", str(data_dir)]
    made = subprocess.run(
        [sys.executable, "-m", "audiences", *command],
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    created = [data_dir, *data_dir.rglob("*")]
    assert data_dir / "audiences.db" in created
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in created}
    assert modes[data_dir.name] == 0o700
    assert all(mode & 0o077 == 0 for mode in modes.values()), modes
