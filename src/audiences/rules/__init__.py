"""The rule language: parse, validate and compile audience rules (no database, no HTTP).

A rule is a SQL boolean expression over profile attributes, and over the profile's events
through aggregates (``count(*) FILTER (WHERE event = 'order') >= 3``, ``sequence(...)``), written
as text (``country = 'US' AND age >= 30``) or as a JSON tree (``{"all": [{"field": ...}]}``). Both
forms parse to one sqlglot tree, held by a ``Rule``. From it come canonical text, the JSON
form, SQL for DuckDB / PostgreSQL / ClickHouse, a compiled Python predicate (or one
function answering a whole set of rules), an explanation on one profile, and the audiences it
depends on. Every problem is reported at once in a ``RuleError`` whose ``errors`` carry stable
``rule_*`` codes and positions.

Typical use::

    rule = validate_rule(text_or_json, schema)      # RuleError if anything is wrong
    rule.text, to_json(rule), dependencies(rule)    # store / return
    to_sql(rule, "duckdb", audience=hook, now=t)    # batch
    to_sql(rule, "duckdb", now_parameter=True)      # batch, compiled once, $now bound per run
    to_predicate(rule, audience=hook)(profile)      # one rule on one profile
    to_predicates({key: rule, ...})(profile)        # streaming: a workspace's rules at once
    next_change(rule, profile, now)                 # when time alone changes the answer

A profile's events are read from ``profile[EVENTS_KEY]`` (``Event``s, oldest first).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from audiences.errors import ErrorDetail
from audiences.rules.behaviour import EVENTS_KEY, MAX_STEPS, MAX_WINDOW_DAYS, is_behavioural
from audiences.rules.behaviour_kinds import unknown_events as _unknown_events
from audiences.rules.diagnostics import at, fail
from audiences.rules.event_reads import EventScope, event_scopes, lookback, merged_scopes
from audiences.rules.explain import explain
from audiences.rules.json_form import from_json, to_json
from audiences.rules.next_change import clock_offsets, next_change
from audiences.rules.parse import parse_rule, parse_tree
from audiences.rules.references import (
    dependencies,
    evaluation_mode,
    evaluation_order,
    find_cycle,
    reads_attributes,
    reads_clock,
)
from audiences.rules.rule import Rule, RuleLimits
from audiences.rules.structure import check_structure
from audiences.rules.to_python import to_predicate
from audiences.rules.to_python_set import asked_audiences, to_predicates
from audiences.rules.to_sql import DIALECTS, NOW_PARAMETER, PARAMETER_DIALECTS, to_sql
from audiences.rules.validate import validate_tree
from audiences.schemas.attributes import AttributeSchema
from audiences.schemas.events import EventSchema

__all__ = [
    "DIALECTS",
    "EVENTS_KEY",
    "MAX_STEPS",
    "MAX_WINDOW_DAYS",
    "NOW_PARAMETER",
    "PARAMETER_DIALECTS",
    "EventScope",
    "Rule",
    "RuleLimits",
    "asked_audiences",
    "clock_offsets",
    "dependencies",
    "evaluation_mode",
    "evaluation_order",
    "event_scopes",
    "explain",
    "find_cycle",
    "is_behavioural",
    "lookback",
    "merged_scopes",
    "next_change",
    "parse_rule",
    "parse_rule_json",
    "reads_attributes",
    "reads_clock",
    "to_json",
    "to_predicate",
    "to_predicates",
    "to_sql",
    "unknown_events",
    "validate_rule",
]


def parse_rule_json(data: Mapping[str, Any], *, limits: RuleLimits = RuleLimits()) -> Rule:
    """Build a Rule from the JSON tree form; problems carry JSON paths in ``location``.

    >>> parse_rule_json({"all": [{"field": "country", "op": "in", "values": ["US", "CA"]},
    ...                          {"field": "age", "op": "gte", "value": 30}]}).text
    "country IN ('US', 'CA') AND age >= 30"
    """
    rule, problems = _from_json(data, limits)
    fail(problems)
    assert rule is not None
    return rule


def _from_json(data: Any, limits: RuleLimits) -> tuple[Rule | None, list[ErrorDetail]]:
    tree, problems = from_json(data, limits.max_depth, limits.max_nodes)
    if tree is None:
        return None, problems
    problems = check_structure(tree, None, limits)
    rule = Rule(tree)
    if not problems and len(rule.text) > limits.max_length:
        message = f"The rule's text is over {limits.max_length:,} characters."
        problems.append(at("rule_too_large", message, None, None))
    return rule, problems


def validate_rule(
    rule: Rule | str | Mapping[str, Any],
    schema: AttributeSchema,
    *,
    limits: RuleLimits = RuleLimits(),
    events: EventSchema = EventSchema(),
) -> Rule:
    """Check a rule (text, JSON form or parsed) against an attribute schema and bind it.

    Names inside aggregates are checked against ``events`` (the event property types); an
    event name no event has had yet is not an error but a warning, in ``Rule.warnings``.

    Raises ``RuleError`` with every problem: syntax, forbidden constructs, limits, unknown
    attributes (with a did-you-mean), type mismatches, bad literals and patterns. The rule
    returned knows its attributes' types, which the back ends use (time zones, collation);
    string literals compared with dates or timestamps become typed literals.

    >>> from audiences.schemas.attributes import AttributeType
    >>> validate_rule("last_seen > '2024-01-01'", {"last_seen": AttributeType.TIMESTAMP}).text
    "last_seen > TIMESTAMP '2024-01-01 00:00:00+00:00'"
    """
    parsed: Rule | None
    problems: list[ErrorDetail]
    if isinstance(rule, Rule):
        parsed, problems = rule, []
    elif isinstance(rule, str):
        tree, problems = parse_tree(rule, limits)
        parsed = Rule(tree, source=rule) if tree is not None else None
    else:
        parsed, problems = _from_json(rule, limits)
    if parsed is None:
        fail(problems)
        raise AssertionError("unreachable")
    # A tree parsed here from text is this call's alone; a given Rule's (or a JSON rule's,
    # whose text was rendered from it) is copied before literals are typed in place.
    owned = isinstance(rule, str)
    bound, typing = validate_tree(parsed, schema, limits, owned=owned, events=events)
    fail([*problems, *typing])
    return bound


def unknown_events(rule: Rule, names: Iterable[str]) -> list[ErrorDetail]:
    """The ``rule_unknown_event`` warnings of a rule against the event names seen so far, with
    positions in the rule's canonical text (``rule.text``): what an audience or a preview shows
    beside its ``rule``, current as events arrive.

    >>> unknown_events(parse_rule("count(*) FILTER (WHERE event = 'ordr') > 0"), ["order"])[0].col
    32
    """
    if not is_behavioural(rule.tree):
        return []
    if rule.source != rule.text:  # positions are read from the text the tree was parsed from
        rule = parse_rule(rule.text)
    return _unknown_events(rule.tree, names, rule.text)
