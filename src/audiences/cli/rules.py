"""``audiences rules check``: validate rules offline against an attribute schema. It runs the
server's rule compiler (``audiences.rules``), so it needs the ``server`` extra."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from audiences.cli.context import FAILURE, fail
from audiences.cli.local import require_server
from audiences.cli.output import Json, Out, Quiet, echo_json, stdout

app = typer.Typer(help="Rules: check them offline.", no_args_is_help=True)
RULE_MODULES = ("sqlglot", "re2")
"""What the rule compiler needs of the server extra."""


def read_rules(path: Path) -> list[tuple[str, Any]]:
    """The rules of ``path``: a JSON object (name to rule) or list, or text with one rule per
    line (blank lines and ``#`` comments skipped), each with a name."""
    text = path.read_text()
    if path.suffix.lower() == ".json":
        data = json.loads(text)
        if isinstance(data, dict):
            return list(data.items())
        return [(f"#{number}", rule) for number, rule in enumerate(data, 1)]
    return [
        (f"line {number}", line.strip())
        for number, line in enumerate(text.splitlines(), 1)
        if line.strip() and not line.lstrip().startswith("#")
    ]


def read_schema(path: Path) -> dict[str, str]:
    """An attribute schema: ``{"age": "integer", …}``, or the JSON list that
    ``audiences attributes list --json`` prints."""
    data = json.loads(path.read_text())
    if isinstance(data, list):
        return {item["name"]: item["type"] for item in data}
    return {str(name): str(kind) for name, kind in data.items()}


@app.command("check")
def check(
    file: Annotated[Path, typer.Argument(help="Rules: text, one per line, or a JSON file.")],
    schema: Annotated[
        Path,
        typer.Option(help="Attribute schema JSON ({name: type}, or `attributes list --json`)."),
    ],
    as_json: Json = False,
    quiet: Quiet = False,
) -> None:
    """Validate rules offline against an attribute schema; exit 1 if any is invalid (needs
    the server extra: pip install 'audiences[server]')."""
    require_server("rules check", RULE_MODULES)
    from audiences.errors import RuleError
    from audiences.rules import validate_rule
    from audiences.schemas.attributes import AttributeType

    try:
        rules = read_rules(file)
        types = {name: AttributeType(kind) for name, kind in read_schema(schema).items()}
    except (OSError, ValueError, KeyError) as exc:
        fail(f"cannot read the rules or the schema: {exc}", FAILURE)
    results = []
    for name, rule in rules:
        try:
            results.append({"name": name, "valid": True, "rule": validate_rule(rule, types).text})
        except RuleError as exc:
            problems = [detail.to_dict() for detail in exc.errors]
            results.append({"name": name, "valid": False, "rule": rule, "errors": problems})
    _print(results, Out(as_json, quiet))
    if not all(result["valid"] for result in results):
        raise typer.Exit(FAILURE)


def _print(results: list[dict[str, Any]], out: Out) -> None:
    if out.as_json:
        echo_json(results)
        return
    for result in results:
        if result["valid"]:
            if not out.quiet:
                stdout.print(f"[green]ok[/]  {result['name']}: {result['rule']}", highlight=False)
            continue
        stdout.print(f"[red]bad[/] {result['name']}: {result['rule']}", highlight=False)
        for problem in result["errors"]:
            where = f" at {problem['line']}:{problem['col']}" if "line" in problem else ""
            hint = f" ({problem['suggestion']})" if "suggestion" in problem else ""
            stdout.print(
                f"      {problem['code']}{where}: {problem['message']}{hint}", highlight=False
            )
