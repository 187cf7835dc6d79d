"""Text to tree: the cheap scan, sqlglot with the rule dialect, normalisation and the whitelist."""

from __future__ import annotations

from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from audiences.errors import ErrorDetail
from audiences.rules.dialect import Rules
from audiences.rules.normalize import normalize
from audiences.rules.problems import at, fail
from audiences.rules.rule import Rule, RuleLimits
from audiences.rules.scan import scan
from audiences.rules.structure import check_structure

_FATAL = {"rule_too_large", "rule_too_deep", "rule_syntax", "rule_forbidden", "rule_bad_character"}


def parse_tree(text: str, limits: RuleLimits) -> tuple[exp.Expr | None, list[ErrorDetail]]:
    """Parse and check a rule's text, returning the tree (if any) and every problem found."""
    if not isinstance(text, str):
        return None, [at("rule_syntax", "A rule must be a string.", None, None)]
    problems = scan(text, limits)
    if any(p.code in _FATAL for p in problems):
        return None, problems
    if not text.strip():
        return None, [at("rule_syntax", "The rule is empty.", text, (0, len(text)))]
    try:
        statements = Rules().parse(text)
    except (ParseError, TokenError) as error:
        return None, [*problems, *_syntax(error, text)]
    if len(statements) != 1 or statements[0] is None:
        return None, [*problems, at("rule_syntax", "The rule is empty.", text, (0, len(text)))]
    tree, normalizing = normalize(statements[0], text)
    problems += normalizing + check_structure(tree, text, limits)
    return tree, problems


def _syntax(error: Exception, text: str) -> list[ErrorDetail]:
    details = getattr(error, "errors", None) or [{}]
    found = []
    for detail in details[:5]:
        line, col = detail.get("line"), detail.get("col")
        where = None
        if line and col:
            starts = [0, *(i + 1 for i, c in enumerate(text) if c == "\n")]
            end = min(starts[min(line, len(starts)) - 1] + col, len(text))
            highlight = len(detail.get("highlight") or "") or 1
            where = (max(end - highlight, 0), end)
        message = detail.get("description") or str(error).splitlines()[0]
        found.append(at("rule_syntax", f"Syntax error: {message}.", text, where))
    return found


def parse_rule(text: str, *, limits: RuleLimits = RuleLimits()) -> Rule:
    """Parse rule text into a Rule, refusing anything outside the language.

    Raises ``RuleError`` listing every problem (syntax, forbidden constructs, unknown
    functions, limits) with its position. Attribute names and types are checked later,
    against a schema, by ``validate_rule``.

    >>> parse_rule("plan IN ('pro','team') AND NOT churned").text
    "plan IN ('pro', 'team') AND NOT churned"
    """
    tree, problems = parse_tree(text, limits)
    fail(problems)
    assert tree is not None
    return Rule(tree, source=text)
