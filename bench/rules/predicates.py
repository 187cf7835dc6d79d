"""Benchmark: the compiled rule predicate against a hand-written lambda, GrowthBook and Flagsmith.

Run with ``.venv/bin/python -m bench.rules.predicates`` (``--quick`` for a smoke run). Two data
sets: in "first condition decides" nine profiles in ten fail the first condition; in "every
condition runs" each profile passes all conditions but maybe the last, so every one is tested.
All four evaluators are checked to agree on every profile before they are timed.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from flag_engine.segments.evaluator import is_context_in_segment
from growthbook.core import evalCondition

from audiences.rules import to_predicate, to_sql, validate_rule
from audiences.schemas.attributes import AttributeType

RULE = "country = 'US' AND age >= 30 AND plan IN ('pro', 'team') AND NOT churned"
SCHEMA = {
    "country": AttributeType.STRING,
    "age": AttributeType.INTEGER,
    "plan": AttributeType.STRING,
    "churned": AttributeType.BOOLEAN,
}
PLANS = frozenset({"pro", "team"})


def hand_written(p: Any) -> bool:
    """What an engineer would write by hand for RULE."""
    return (
        p.get("country") == "US"
        and (p.get("age") or 0) >= 30
        and p.get("plan") in PLANS
        and p.get("churned") is False
    )


GROWTHBOOK = {
    "country": "US",
    "age": {"$gte": 30},
    "plan": {"$in": ["pro", "team"]},
    "churned": False,
}
FLAGSMITH = {
    "key": "1",
    "name": "rule",
    "rules": [
        {
            "type": "ALL",
            "conditions": [
                {"property": "country", "operator": "EQUAL", "value": "US"},
                {"property": "age", "operator": "GREATER_THAN_INCLUSIVE", "value": "30"},
                {"property": "plan", "operator": "IN", "value": ["pro", "team"]},
                {"property": "churned", "operator": "EQUAL", "value": "false"},
            ],
        }
    ],
}


def datasets(size: int) -> dict[str, list[dict[str, Any]]]:
    """Profiles for the two scenarios (fixed seed)."""
    rng = random.Random(7)
    early = [
        {
            "country": "US" if rng.random() < 0.1 else rng.choice(["CA", "FR", "DE"]),
            "age": rng.randint(18, 80),
            "plan": rng.choice(["free", "pro", "team"]),
            "churned": rng.random() < 0.2,
        }
        for _ in range(size)
    ]
    full = [
        {
            "country": "US",
            "age": rng.randint(30, 80),
            "plan": rng.choice(["pro", "team"]),
            "churned": rng.random() < 0.5,
        }
        for _ in range(size)
    ]
    return {"first condition decides": early, "every condition runs": full}


def _flagsmith_context(profile: dict[str, Any]) -> dict[str, Any]:
    return {
        "environment": {"key": "e", "name": "e"},
        "identity": {"identifier": "u", "traits": profile},
    }


def rate(evaluate: Callable[[Any], bool], inputs: Sequence[Any], rounds: int) -> float:
    """Evaluations per second: the best of several timed passes over the inputs."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for item in inputs:
            evaluate(item)
        best = min(best, time.perf_counter() - start)
    return len(inputs) / best


def compile_ms(repeat: int) -> float:
    """Median milliseconds to validate one rule and compile it to Python and all four SQLs."""
    timings = []
    for _ in range(repeat):
        start = time.perf_counter()
        rule = validate_rule(RULE, SCHEMA)
        to_predicate(rule)
        for dialect in ("duckdb", "postgres", "clickhouse", "spark"):
            to_sql(rule, dialect)  # type: ignore[arg-type]
        timings.append(time.perf_counter() - start)
    return statistics.median(timings) * 1000


def main(argv: Sequence[str] | None = None) -> None:
    """Print evaluations per second, ratios against the targets, and compile time."""
    parser = argparse.ArgumentParser(description="Rule predicate benchmark")
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    options = parser.parse_args(argv)
    size, rounds = (2_000, 2) if options.quick else (50_000, 7)
    compiled = to_predicate(validate_rule(RULE, SCHEMA))
    print(f"python {platform.python_version()} on {platform.processor() or platform.machine()}")
    print(f"rule: {RULE}\n")
    for name, profiles in datasets(size).items():
        contexts = [_flagsmith_context(p) for p in profiles]
        expected = [hand_written(p) for p in profiles]
        assert [compiled(p) for p in profiles] == expected
        assert [evalCondition(p, GROWTHBOOK) for p in profiles] == expected
        assert [is_context_in_segment(c, FLAGSMITH) for c in contexts] == expected  # type: ignore[arg-type]
        results = {
            "audiences predicate": rate(compiled, profiles, rounds),
            "hand-written lambda": rate(hand_written, profiles, rounds),
            "growthbook evalCondition": rate(
                lambda p: evalCondition(p, GROWTHBOOK), profiles, rounds
            ),
            "flagsmith is_context_in_segment": rate(
                lambda c: is_context_in_segment(c, FLAGSMITH),
                contexts,
                max(1, rounds // 3),  # type: ignore[arg-type]
            ),
        }
        ours = results["audiences predicate"]
        print(f"{name} ({sum(expected)} of {len(profiles)} members)")
        for label, value in results.items():
            ratio = "" if label == "audiences predicate" else f"  ours = {ours / value:6.2f}x"
            print(f"  {label:34} {value / 1e6:7.3f} M evals/s{ratio}")
        print()
    print(f"compile one rule to Python + 4 SQL dialects: {compile_ms(50):.2f} ms (median of 50)")


if __name__ == "__main__":
    main()
