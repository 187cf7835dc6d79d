"""Text to tree: the cheap scan, sqlglot with the rule dialect, normalisation and the whitelist."""

from __future__ import annotations

from collections.abc import Sequence

from sqlglot import exp
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokenizer_core import Token, TokenType

from audiences.errors import ErrorDetail
from audiences.rules.diagnostics import at, fail
from audiences.rules.dialect import Rules
from audiences.rules.normalize import normalize
from audiences.rules.rule import Rule, RuleLimits
from audiences.rules.scan import scan
from audiences.rules.structure import check_structure

_FATAL = {"rule_too_large", "rule_too_deep", "rule_syntax", "rule_forbidden", "rule_bad_character"}
_SIZE = {"rule_too_large", "rule_too_deep"}

_OPENING = {TokenType.L_PAREN, TokenType.L_BRACKET, TokenType.L_BRACE}
_CLOSING = {TokenType.R_PAREN, TokenType.R_BRACKET, TokenType.R_BRACE}
_OPERANDS = {
    TokenType.VAR,
    TokenType.NUMBER,
    TokenType.STRING,
    TokenType.IDENTIFIER,
    TokenType.NULL,
    TokenType.TRUE,
    TokenType.FALSE,
    TokenType.STAR,
    TokenType.PLACEHOLDER,
}
"""Tokens that are values: an operator after one joins it to the next."""


def parse_tree(text: str, limits: RuleLimits) -> tuple[exp.Expr | None, list[ErrorDetail]]:
    """Parse and check a rule's text, returning the tree (if any) and every problem found."""
    if not isinstance(text, str):
        return None, [at("rule_syntax", "A rule must be a string.", None, None)]
    problems = scan(text, limits)
    if any(p.code in _FATAL for p in problems):
        return None, problems
    if not text.strip():
        return None, [at("rule_syntax", "The rule is empty.", text, (0, len(text)))]
    dialect = Rules()
    try:
        tokens = dialect.tokenize(text)
        too_deep = _nesting(tokens, text, limits)
        if too_deep is not None:
            return None, [*problems, too_deep]
        statements = dialect.parser().parse(tokens, text)
    except (ParseError, TokenError) as error:
        return None, [*problems, *_syntax(error, text)]
    if len(statements) != 1 or statements[0] is None:
        return None, [*problems, at("rule_syntax", "The rule is empty.", text, (0, len(text)))]
    tree, normalizing = normalize(statements[0], text)
    structural = check_structure(tree, text, limits)
    problems += normalizing + structural
    if any(p.code in _SIZE for p in structural):
        return None, problems  # nothing more is done with a tree this size (it may recurse)
    return tree, problems


def _nesting(tokens: Sequence[Token], text: str, limits: RuleLimits) -> ErrorDetail | None:
    """``rule_too_deep`` where brackets and operators nest deeper than ``limits.max_depth``.

    The parser descends one level for every bracket and every prefix operator (``NOT``, ``-``,
    ``INTERVAL``, ...): ``NOT NOT ... true`` 2,000 times would exhaust Python's recursion
    before the tree could be measured. Counted on the tokens instead: a bracket opens a level,
    and so does every operator that does not follow a value (one that does joins two values).
    """
    bases = [0]
    run = 0
    after_value = False
    for token in tokens:
        kind = token.token_type
        if kind in _OPENING:
            bases.append(bases[-1] + run + 1)
            run, after_value = 0, False
        elif kind in _CLOSING:
            if len(bases) > 1:
                bases.pop()
            run, after_value = 0, True
        elif kind is TokenType.COMMA:
            run, after_value = 0, False
        elif kind in _OPERANDS:
            run, after_value = 0, True
        elif after_value:
            after_value = False
        else:
            run += 1
        if bases[-1] + run > limits.max_depth:
            message = f"The rule nests deeper than {limits.max_depth} levels."
            return at("rule_too_deep", message, text, (token.start, token.end + 1))
    return None


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
