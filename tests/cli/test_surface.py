"""The command line's surface: help lists every command, docs/cli.md documents each one, the
client commands import nothing of the server, and the server's commands say what to install
when its extra is missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from audiences.cli import app

DOCS = Path(__file__).parents[2] / "docs" / "cli.md"
HEAVY = (
    "duckdb",
    "sqlalchemy",
    "fastapi",
    "uvicorn",
    "numpy",
    "pyroaring",
    "sqlglot",
    "pydantic_settings",
)
SERVER_PACKAGES = ("api", "services", "store", "engines", "rules", "jobs", "queue", "membership")
SERVER = tuple(f"audiences.{name}" for name in (*SERVER_PACKAGES, "config"))
MODELS = ("audiences.schemas.common", "audiences.schemas.audiences", "audiences.schemas.events")


def command_paths() -> list[str]:
    """Every leaf command, as typed after ``audiences`` (``audiences list``, ``import``)."""
    found: list[str] = []

    def walk(command: Any, prefix: str) -> None:
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(sub, f"{prefix} {name}".strip())
        else:
            found.append(prefix)

    walk(typer.main.get_command(app), "")
    return found


def test_help_lists_every_command_and_docs_document_each() -> None:
    runner = CliRunner()
    paths = command_paths()
    assert {"audiences list", "members", "import", "rules check", "serve"} <= set(paths)
    groups = {path.split()[0] for path in paths}
    top = runner.invoke(app, ["--help"], terminal_width=200).stdout
    assert all(group in top for group in groups)
    for group in {path.split()[0] for path in paths if " " in path}:
        shown = runner.invoke(app, [group, "--help"], terminal_width=200).stdout
        assert all(path.split()[1] in shown for path in paths if path.startswith(group + " "))
    documented = DOCS.read_text()
    missing = [path for path in paths if f"audiences {path}" not in documented]
    assert not missing, f"docs/cli.md does not document: {missing}"


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def _loaded(prefixes: tuple[str, ...]) -> str:
    """Code printing the loaded modules that are, or are inside, one of ``prefixes``."""
    return (
        f"print(sorted(m for m in sys.modules if any(m == p or m.startswith(p + '.') "
        f"for p in {prefixes!r})))"
    )


def test_the_sdk_and_the_client_commands_import_nothing_of_the_server() -> None:
    code = "import sys, audiences.sdk, audiences.cli, audiences.cli.main;" + _loaded(HEAVY + SERVER)
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("argv", "absent"),
    [
        # Help needs the commands' options, not the SDK or the wire models (typer itself reads
        # some options through pydantic, so only the top-level help is without it).
        (["--help"], HEAVY + SERVER + ("httpx", "pydantic", "audiences.sdk") + MODELS),
        (["events", "--help"], HEAVY + SERVER + ("httpx", "audiences.sdk") + MODELS),
        # A client command loads the SDK and only the resource it uses.
        (
            ["--url", "http://127.0.0.1:9", "jobs", "get", "j1"],
            HEAVY + SERVER + ("audiences.sdk.resources.audiences", "audiences.schemas.audiences"),
        ),
    ],
)
def test_client_commands_load_only_what_they_use(argv: list[str], absent: tuple[str, ...]) -> None:
    # No retries for the unreachable server (the SDK is loaded then anyway).
    quick = "import audiences.sdk._http as h; h.Retry.__init__.__defaults__ = (1, 0.0, 0.0, 0.0)\n"
    code = (
        f"import sys; sys.argv = ['audiences', *{argv!r}]\n"
        + ("" if "--help" in argv else quick)
        + "from audiences.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n" + _loaded(absent)
    )
    result = run_python(code)
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout + result.stderr


def test_server_commands_without_the_extra_say_what_to_install() -> None:
    code = (
        "import sys; sys.modules['duckdb'] = None; sys.argv = ['audiences', 'serve'];"
        "from audiences.cli import main; main()"
    )
    result = run_python(code)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "pip install 'audiences[server]'" in result.stderr


def test_shell_completion_completes_commands() -> None:
    code = "import sys; sys.argv = ['audiences']; from audiences.cli import main; main()"
    env = {"_AUDIENCES_COMPLETE": "complete_bash", "COMP_WORDS": "audiences audiences l"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **env, "COMP_CWORD": "2"},
    )
    assert result.returncode == 0 and result.stdout.split() == ["list"]


def test_the_command_lines_copy_of_the_event_limit_is_the_apis() -> None:
    from audiences.cli import events
    from audiences.schemas.events import MAX_EVENTS

    assert events.MAX_EVENTS == MAX_EVENTS
