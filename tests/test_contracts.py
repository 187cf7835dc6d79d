"""Keeping the docs honest: settings, error codes, routes and the README's commands."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import FastAPI

from audiences import errors
from audiences.config import Settings

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "audiences"


def _doc(name: str) -> str:
    return (ROOT / "docs" / name).read_text()


def test_every_setting_is_documented() -> None:
    doc = _doc("configuration.md")
    missing = [name for name in Settings.model_fields if f"`AUDIENCES_{name.upper()}`" not in doc]
    assert missing == []


def test_every_error_code_is_documented() -> None:
    doc = _doc("errors.md")
    codes = {cls.code for cls in errors.ALL_ERRORS}
    for path in SRC.rglob("*.py"):
        codes |= set(re.findall(r'\bcode="([a-z_]+)"', path.read_text()))
    missing = sorted(code for code in codes if f"`{code}`" not in doc)
    assert missing == []


def test_every_route_is_documented(app: FastAPI) -> None:
    doc = _doc("api.md")
    missing = [
        f"{method.upper()} {path}"
        for path, operations in app.openapi()["paths"].items()
        for method in operations
        if f"{method.upper()} {path}" not in doc and path not in doc
    ]
    assert missing == []


def test_ci_runs_the_readmes_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```sh\n(.+?)\n```", readme)
    test_command = next(command for command in commands if "pytest" in command)
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_command in ci.splitlines()
