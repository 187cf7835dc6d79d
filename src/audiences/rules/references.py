"""Audience references: what a rule depends on, how it must be evaluated, and in which order."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

from sqlglot import exp

from audiences.errors import ErrorDetail, RuleError
from audiences.rules.behaviour import STREAMING_REASON, batch_reason, event_clock, is_behavioural
from audiences.rules.dialect import Attr, InAudience
from audiences.rules.rule import Rule

Mode = Literal["streaming", "scheduled"]
Graph = Mapping[str, Iterable[str]]
"""Audience key -> the audience keys its rule references."""


def dependencies(rule: Rule) -> frozenset[str]:
    """The audience keys a rule references through ``in_audience``.

    >>> from audiences.rules import parse_rule
    >>> sorted(dependencies(parse_rule("in_audience('a') OR NOT in_audience('b')")))
    ['a', 'b']
    """
    return frozenset(node.this.name for node in rule.tree.find_all(InAudience))


def reads_clock(rule: Rule) -> bool:
    """Whether a rule reads the current time (``now()`` or ``current_date``).

    >>> from audiences.rules import parse_rule
    >>> reads_clock(parse_rule("age > 30")), reads_clock(parse_rule("born < current_date"))
    (False, True)
    """
    return rule.tree.find(exp.CurrentTimestamp, exp.CurrentDate) is not None


def reads_attributes(rule: Rule) -> bool:
    """Whether a rule reads a profile attribute (not only its events and audiences).

    >>> from audiences.rules import parse_rule
    >>> reads_attributes(parse_rule("age > 30")), reads_attributes(parse_rule("count(*) > 1"))
    (True, False)
    """
    return rule.tree.find(Attr) is not None


def evaluation_mode(rule: Rule, streaming_audiences: Iterable[str]) -> tuple[Mode, str]:
    """Whether a rule can be evaluated the moment a profile changes, and why (or why not).

    A rule is ``streaming`` when it reads only the profile (its attributes, and its events
    through relative windows: see ``behaviour.batch_reason``) and streaming audiences; it is
    ``scheduled`` when it reads events in a way only batch runs evaluate, the clock other than
    through an event window (its answer changes with time alone) or an audience that is itself
    evaluated on a schedule.

    >>> from audiences.rules import parse_rule
    >>> evaluation_mode(parse_rule("last_seen > now() - INTERVAL 7 DAY"), set())
    ('scheduled', 'it depends on the current time (now()), so its answer changes as time passes')
    """
    events = batch_reason(rule.tree)
    if events is not None:
        return "scheduled", events
    clock = sorted(
        {
            _clock_name(n)
            for n in rule.tree.find_all(exp.CurrentTimestamp, exp.CurrentDate)
            if not event_clock(n)
        }
    )
    if clock:
        used = " and ".join(clock)
        return (
            "scheduled",
            f"it depends on the current time ({used}), so its answer changes as time passes",
        )
    batch = sorted(dependencies(rule) - set(streaming_audiences))
    if batch:
        names = ", ".join(batch)
        return "scheduled", f"it depends on audiences evaluated on a schedule: {names}"
    if is_behavioural(rule.tree):
        return "streaming", STREAMING_REASON
    if dependencies(rule):
        return "streaming", "it depends only on profile attributes and streaming audiences"
    return "streaming", "it depends only on the profile's own attributes"


def _clock_name(node: exp.Expr) -> str:
    return "now()" if isinstance(node, exp.CurrentTimestamp) else "current_date"


def find_cycle(graph: Graph) -> list[str] | None:
    """A dependency cycle as a path that ends where it starts, or None when there is none.

    >>> find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]})
    ['a', 'b', 'c', 'a']
    >>> find_cycle({"a": ["b"], "b": []}) is None
    True
    """
    edges = {key: sorted(set(targets)) for key, targets in graph.items()}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for start in sorted(edges):
        if start in state:
            continue
        path, stack = [start], [iter(edges.get(start, []))]
        state[start] = 1
        while stack:
            step = next(stack[-1], None)
            if step is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(step) == 1:
                return [*path[path.index(step) :], step]
            elif step not in state:
                state[step] = 1
                path.append(step)
                stack.append(iter(edges.get(step, [])))
    return None


def evaluation_order(graph: Graph) -> list[str]:
    """Every audience after the audiences it depends on (ties by key), refusing cycles.

    >>> evaluation_order({"vip": ["buyers"], "buyers": [], "lapsed": ["vip", "buyers"]})
    ['buyers', 'vip', 'lapsed']
    """
    cycle = find_cycle(graph)
    if cycle is not None:
        message = "Audiences depend on each other in a cycle: " + " -> ".join(cycle)
        raise RuleError(message, errors=[ErrorDetail("rule_cycle", message, tuple(cycle))])
    edges = {key: set(targets) for key, targets in graph.items()}
    nodes = sorted(set(edges).union(*edges.values()) if edges else set())
    done: list[str] = []
    placed: set[str] = set()
    while len(done) < len(nodes):
        ready = [n for n in nodes if n not in placed and edges.get(n, set()) <= placed]
        done.extend(ready)
        placed.update(ready)
    return done
