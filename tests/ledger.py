"""The error-code and status ledger: what the test session made the service answer, checked
against docs/errors.md and the OpenAPI contract at the end of the session.

Recorded while tests run:

- every ``code`` of a problem a client saw through :class:`tests.client.ApiClient` (problem
  responses, and problems inside 207 bodies), with the operation (method and path template)
  and the status it came with;
- every code an :class:`audiences.errors.AudiencesError` was created with, so codes produced
  below HTTP (the CLI, services tested on their own) count as produced too.

Checked at the end (:func:`problems`):

- every code a client saw is documented in docs/errors.md, and every status an operation
  answered is declared for it in ``/openapi.json`` (on any run: these are facts);
- every code of the main table of docs/errors.md (``| status | code | when |``) was produced
  by some test, except the generic codes the docs name as such (only on a complete run,
  where every test ran and passed; a partial run cannot tell).

Under pytest-xdist each worker keeps its own ledger and hands it to the controller in
``workeroutput`` (tests/conftest.py), which merges them and runs the checks once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from audiences import errors

DOCS = Path(__file__).resolve().parent.parent / "docs" / "errors.md"
PROBLEM_JSON = "application/problem+json"


@dataclass
class Ledger:
    """Codes seen in one process, and the statuses operations answered without declaring."""

    codes: set[str] = field(default_factory=set)
    answered: set[str] = field(default_factory=set)
    undeclared: set[str] = field(default_factory=set)
    deselected: int = 0

    def dump(self) -> dict[str, Any]:
        """The ledger as plain data (xdist's ``workeroutput`` crosses processes)."""
        return {
            "codes": sorted(self.codes),
            "answered": sorted(self.answered),
            "undeclared": sorted(self.undeclared),
            "deselected": self.deselected,
        }

    def merge(self, data: dict[str, Any]) -> None:
        """Add another process's :meth:`dump`."""
        self.codes |= set(data["codes"])
        self.answered |= set(data["answered"])
        self.undeclared |= set(data["undeclared"])
        self.deselected += data["deselected"]


LEDGER = Ledger()
"""This process's ledger."""
_templates: dict[int, tuple[FastAPI, list[tuple[re.Pattern[str], str]]]] = {}


def install() -> None:
    """Record the code of every :class:`AudiencesError` created from now on."""
    original = errors.AudiencesError.__init__
    if getattr(original, "_ledger", False):
        return

    def recording(self: errors.AudiencesError, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        LEDGER.codes.add(self.code)

    recording._ledger = True  # type: ignore[attr-defined]
    errors.AudiencesError.__init__ = recording  # type: ignore[method-assign]


def record(app: FastAPI, method: str, response: httpx.Response) -> None:
    """Note the codes and the status of one response of ``app``."""
    template = _template(app, method, response.request.url.path)
    if template is not None:
        operation = app.openapi()["paths"][template][method.lower()]
        if str(response.status_code) not in operation.get("responses", {}):
            LEDGER.undeclared.add(f"{method.upper()} {template} answered {response.status_code}")
    content_type = response.headers.get("content-type", "")
    if content_type.startswith(PROBLEM_JSON):
        _answered(response.json())
    elif response.status_code == 207 and content_type.startswith("application/json"):
        for result in response.json().get("results", []):
            if isinstance(result, dict) and isinstance(result.get("problem"), dict):
                _answered(result["problem"])


def _answered(problem: dict[str, Any]) -> None:
    code = problem.get("code")
    if isinstance(code, str):
        LEDGER.answered.add(code)
        LEDGER.codes.add(code)


def _template(app: FastAPI, method: str, path: str) -> str | None:
    known = _templates.get(id(app))
    if known is None or known[0] is not app:
        paths = app.openapi()["paths"]
        # Literal paths first: /v1/audiences/preview before /v1/audiences/{audience_id}.
        ordered = sorted(paths, key=lambda p: (p.count("{"), p))
        patterns = [(re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", p) + "$"), p) for p in ordered]
        known = _templates[id(app)] = (app, patterns)
    operations = app.openapi()["paths"]
    for pattern, template in known[1]:
        if pattern.match(path) and method.lower() in operations[template]:
            return template
    return None


def documented_codes() -> tuple[set[str], set[str], set[str]]:
    """docs/errors.md's codes: all of them, those of its main table, and the generic ones."""
    text = DOCS.read_text()
    every = set(re.findall(r"`([a-z_]+)`", text))
    table = set()
    for line in text.splitlines():
        if re.match(r"\| \d{3} \|", line):
            table |= set(re.findall(r"`([a-z_]+)`", line.split("|")[2]))
    paragraph = next(part for part in text.split("\n\n") if part.startswith("Generic codes"))
    generic = set(re.findall(r"`([a-z_]+)`", paragraph.split(".")[0]))
    return every, table, generic


def problems(ledger: Ledger, *, complete: bool) -> list[str]:
    """What the session showed to be wrong; ``complete``: the whole suite ran and passed."""
    every, table, generic = documented_codes()
    found = [
        f"code {code!r} was answered but is not in docs/errors.md"
        for code in sorted(ledger.answered - every)
    ]
    found += [f"{answer}, a status it does not declare" for answer in sorted(ledger.undeclared)]
    if complete:
        found += [
            f"code {code!r} of docs/errors.md was produced by no test"
            for code in sorted(table - generic - ledger.codes)
        ]
    return found
