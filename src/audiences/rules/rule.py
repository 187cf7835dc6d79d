"""The Rule value object and the limits every rule is held to."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

from sqlglot import exp

from audiences.errors import ErrorDetail
from audiences.rules.dialect import render
from audiences.schemas.attributes import AttributeType


@dataclass(frozen=True)
class RuleLimits:
    """Bounds on a rule's size, so hostile input is refused before it costs anything.

    >>> RuleLimits().max_length, RuleLimits().max_depth
    (10000, 32)
    """

    max_length: int = 10_000
    """Characters of rule text (a JSON rule counts the characters of its canonical text)."""
    max_depth: int = 32
    """Nesting of parentheses, brackets and sub-expressions; an AND/OR chain counts once."""
    max_nodes: int = 5_000
    """Nodes in the parsed tree."""
    max_list: int = 1_000
    """Values in one IN list or list literal."""


@dataclass(frozen=True, eq=False)
class Rule:
    """A parsed rule: the sqlglot tree, and once validated the types of the attributes it reads.

    Two rules are equal when their canonical text is equal.

    >>> from audiences.rules import parse_rule
    >>> parse_rule("country = 'US'  AND age>=30").text
    "country = 'US' AND age >= 30"
    """

    tree: exp.Expr
    schema: Mapping[str, AttributeType] = field(default_factory=dict)
    """Types of the attributes this rule reads; empty until ``validate_rule`` binds it."""
    source: str | None = None
    """The text the rule was parsed from, which error positions refer to."""
    events: Mapping[str, AttributeType] = field(default_factory=dict)
    """Types of the event properties this rule reads; empty until ``validate_rule`` binds it."""
    warnings: tuple[ErrorDetail, ...] = ()
    """Problems that do not make the rule invalid (``rule_unknown_event``), found by
    ``validate_rule``."""

    @cached_property
    def text(self) -> str:
        """Canonical text: parsing it again gives the same tree."""
        return render(self.tree)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Rule) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"Rule({self.text!r})"
