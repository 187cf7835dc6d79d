"""Many rules to one Python function: each attribute read once, repeated tests computed once.

Streaming evaluates every audience of a workspace on each written profile. Compiled one by one
(``to_predicate``), 20 rules read their attributes 20 times over and repeat the same tests;
compiled as a set, one generated function reads each attribute into a local, converts it
(timestamps, dates) once, computes a test that several rules contain once, and returns every
rule's answer as a tuple in the mapping's order. ``in_audience`` of a rule compiled earlier in
the set reads that rule's local result; other audiences go through the ``audience`` hook.

The answers are exactly those of the single predicates. What the function computes ahead of
the rules (a conversion, a shared test) is only what some rule of the set computes whenever it
runs: what the first operand of each node reaches from the rule's root, the code every SQL
short circuit runs first. So the set function fails exactly when one of the predicates would.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any

from sqlglot import exp

from audiences.rules import dialect as d
from audiences.rules import sql_semantics
from audiences.rules.behaviour import inside
from audiences.rules.literals import constant
from audiences.rules.nodes import operands
from audiences.rules.operators import OPERATORS
from audiences.rules.references import dependencies
from audiences.rules.rule import Rule
from audiences.rules.to_python import (
    AudienceCheck,
    Clock,
    Codegen,
    Profile,
    access,
    define,
    no_audience,
)

Answers = Callable[[Profile], tuple[bool, ...]]
"""``answers(profile)``: each rule's answer (True when the rule is TRUE), in the set's order."""

_CONNECTIVES = (exp.And, exp.Or, exp.Not, exp.Paren, d.InAudience)
_FIXED = {"True", "False", "None"}


class _Shared:
    """What the rules of one set have in common while their code is generated."""

    def __init__(self, keys: list[str]) -> None:
        self.names: dict[str, Any] = {}
        self.constants: dict[tuple[type, str], str] = {}
        self.ids = itertools.count()
        self.results = {key: f"r{index}" for index, key in enumerate(keys)}
        """The local holding each rule's answer, by audience key."""
        self.referenced: set[str] = set()
        """The results a later rule reads (the others are computed in the return tuple)."""
        self.reads: dict[str, str] = {}
        """Attribute access code -> the local holding its raw value."""
        self.hoisted: dict[str, str] = {}
        """Converted-attribute code (``_timestamp(v0)``) -> the local holding it."""
        self.tests: dict[str, list[bool]] = {}
        """A test's code -> for each occurrence, whether its rule always evaluates it."""
        self.shared: dict[str, str] = {}
        """The tests computed once: code -> local name."""


class _SetCodegen(Codegen):
    """The Codegen of one rule of a set: attribute values, constants and tests are shared."""

    def __init__(self, rule: Rule, shared: _Shared) -> None:
        super().__init__(rule)
        self.rule = rule
        self.shared = shared
        self.names = shared.names
        self._ids = shared.ids
        self.earlier: Mapping[str, str] = {}
        self.used: list[str] = []
        """The shared tests this rule reads, in order."""
        self.body = ""
        """The rule's truth code, once generated."""
        self.certain = _certain(rule.tree)
        self.per_event = inside(rule.tree)
        """Nodes whose code runs once per event (in a lambda over ``q``): never shared."""
        for node in rule.tree.find_all(d.Attr):
            if id(node) in self.certain and self.wrap(node) != "{}":
                # The rule always converts this attribute: every rule reads the converted local.
                converted = self.wrap(node).format(self.read(node))
                shared.hoisted.setdefault(converted, f"w{len(shared.hoisted)}")

    def generate(self, earlier: Mapping[str, str]) -> None:
        """Generate the rule's truth code; ``earlier`` names the answers of the rules before."""
        self.earlier = earlier
        self.locals = {*self.shared.reads.values(), *self.shared.hoisted.values()}
        self.locals.update(earlier.values())
        self.body = self.truth(self.rule.tree)

    def read(self, node: exp.Expr) -> str:
        """The local holding an attribute's raw value."""
        return self.shared.reads.setdefault(access(node.name), f"v{len(self.shared.reads)}")

    def const(self, value: Any) -> str:
        code = super().const(value)
        if code not in self.names:
            return code
        # One global per distinct constant, so equal tests in two rules have equal code. The
        # repr tells apart what equality would merge but behaves differently (time zones).
        key = (type(value), _stable_repr(value))
        name = self.shared.constants.setdefault(key, code)
        if name != code:
            del self.names[code]
        return name

    def attribute(self, node: exp.Expr) -> str:
        raw = self.read(node)
        self.locals.add(raw)
        converted = self.wrap(node).format(raw)
        return self.shared.hoisted.get(converted, converted)

    def value(self, node: exp.Expr) -> str:
        local = self._local_audience(node)
        return local if local is not None else super().value(node)

    def truth(self, node: exp.Expr) -> str:
        local = self._local_audience(node)
        return local if local is not None else self._test(node, super().truth(node))

    def falsity(self, node: exp.Expr) -> str:
        local = self._local_audience(node)
        return f"(not {local})" if local is not None else self._test(node, super().falsity(node))

    def _local_audience(self, node: exp.Expr) -> str | None:
        """The local answer of an earlier rule in the set that ``in_audience`` names."""
        if not isinstance(node, d.InAudience):
            return None
        name = self.earlier.get(node.this.name)
        if name is not None:
            self.shared.referenced.add(name)
        return name

    def _test(self, node: exp.Expr, code: str) -> str:
        """Record a test that others may share; a shared one is read from its local."""
        if isinstance(node, _CONNECTIVES) or ":=" in code or code in _FIXED | self.locals:
            return code
        if id(node) in self.per_event:
            return code
        self.shared.tests.setdefault(code, []).append(id(node) in self.certain)
        name = self.shared.shared.get(code)
        if name is None:
            return code
        self.used.append(name)
        return name


def _stable_repr(value: Any) -> str:
    """A repr that does not depend on the hash seed: set members are listed in sorted order."""
    if isinstance(value, (set, frozenset)):
        return repr(sorted(f"{type(item).__name__}:{item!r}" for item in value))
    return repr(value)


def _certain(tree: exp.Expr) -> set[int]:
    """Ids of the nodes a rule's code always evaluates: its root, then each first operand.

    Every node's code evaluates its first operand before anything else, except a strict
    operator with a NULL literal operand, which is NULL without evaluating any.
    """
    found: set[int] = set()
    node: exp.Expr | None = tree
    while node is not None:
        found.add(id(node))
        operator = OPERATORS.get(type(node))
        items = operands(node)
        if operator is None or not items:
            break
        if operator.python is not None and any(constant(item) is None for item in items):
            break
        node = items[0]
    return found


def to_predicates(
    rules: Mapping[str, Rule],
    *,
    audience: AudienceCheck = no_audience,
    clock: Clock = sql_semantics.now_utc,
) -> Answers:
    """Compile bound rules, by audience key in dependency order, into one function.

    ``answers(profile)`` gives a tuple of bools, one per rule in the mapping's order, each
    exactly what ``to_predicate(rule, audience=audience, clock=clock)(profile)`` gives.
    ``in_audience`` of a key earlier in the mapping uses that rule's answer; any other key asks
    ``audience(key, profile)``. ``clock`` is read once per call, when some rule uses the time.

    >>> from audiences.rules import parse_rule
    >>> answers = to_predicates({
    ...     "adults": parse_rule("age >= 18"),
    ...     "adult-buyers": parse_rule("in_audience('adults') AND orders > 0"),
    ...     "minors": parse_rule("NOT age >= 18"),
    ... })
    >>> answers({"age": 30, "orders": 2}), answers({"age": 12, "orders": 1}), answers({})
    ((True, True, False), (False, False, True), (False, False, False))
    """
    source, names = set_source(rules)
    function: Answers = define(source, "_rules", names, audience, clock)
    return function


def asked_audiences(rules: Mapping[str, Rule]) -> frozenset[str]:
    """The audience keys the set's function asks its hook about: those no earlier rule answers.

    When it is empty the function never calls the hook, so the profile needs nothing but its
    attributes.

    >>> from audiences.rules import parse_rule
    >>> sorted(asked_audiences({"a": parse_rule("in_audience('x')"),
    ...                         "b": parse_rule("in_audience('a') OR in_audience('c')")}))
    ['c', 'x']
    """
    asked: set[str] = set()
    for index, rule in enumerate(rules.values()):
        asked |= dependencies(rule) - set(list(rules)[:index])
    return frozenset(asked)


def set_source(rules: Mapping[str, Rule]) -> tuple[str, dict[str, Any]]:
    """The source of ``def _rules(p)`` for a set, and the constants it names."""
    keys = list(rules)
    # First pass: find the tests that recur; second pass: generate with those computed once.
    survey = _Shared(keys)
    _generate(rules, survey)
    shared = _Shared(keys)
    recurring = [code for code, seen in survey.tests.items() if len(seen) > 1 and any(seen)]
    shared.shared = {code: f"s{index}" for index, code in enumerate(recurring)}
    gens = _generate(rules, shared)
    lines = ["def _rules(p):"]
    if any(gen.clock_used for gen in gens):
        lines += ["    _now = _clock()", "    _today = _now.astimezone(UTC).date()"]
    lines += [f"    {name} = {code}" for code, name in shared.reads.items()]
    lines += [f"    {name} = {code}" for code, name in shared.hoisted.items()]
    codes = {name: code for code, name in shared.shared.items()}
    answers = []
    for result, gen in zip(shared.results.values(), gens, strict=True):
        # A shared test is computed just before the first rule that reads it.
        for name in dict.fromkeys(gen.used):
            code = codes.pop(name, None)
            if code is not None:
                lines.append(f"    {name} = {code}")
        if result in shared.referenced:
            lines.append(f"    {result} = {gen.body}")
            answers.append(result)
        else:
            answers.append(gen.body)  # straight into the tuple: measurably faster than a local
    lines.append("    return (")
    lines += [f"        {answer}," for answer in answers]
    lines.append("    )")
    return "\n".join(lines), shared.names


def _generate(rules: Mapping[str, Rule], shared: _Shared) -> list[_SetCodegen]:
    """Each rule's code generator, its truth code generated (``gen.body``), in order."""
    gens = [_SetCodegen(rule, shared) for rule in rules.values()]
    earlier: dict[str, str] = {}
    for key, gen in zip(rules, gens, strict=True):
        gen.generate(dict(earlier))
        earlier[key] = shared.results[key]
    return gens
