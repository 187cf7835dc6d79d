"""Batch selection with compiled rules cached: a rule compiled once answers for each run's time.

Each answer is checked against the oracle's hand-written DuckDB SQL (tests/oracle.py).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from fastapi import FastAPI

from audiences.engines import conditions
from audiences.rules import DIALECTS, PARAMETER_DIALECTS
from audiences.schemas.attributes import AttributeType
from audiences.services import evaluation
from audiences.services.evaluation import compiled
from tests.factories import Tenant
from tests.oracle import Oracle, declare, ingest

SCHEMA = {"last_seen": "timestamp", "signup_date": "date", "age": "integer"}
START = datetime(2024, 3, 1, tzinfo=UTC)
RULE = "last_seen > now() - INTERVAL 2 DAY AND signup_date < current_date AND age >= 30"
ORACLE_SQL = "last_seen > NOW - INTERVAL 2 DAY AND signup_date < CAST(NOW AS DATE) AND age >= 30"


def _records() -> list[tuple[str, dict[str, object]]]:
    return [
        (
            f"p{n}",
            {
                "last_seen": START + timedelta(hours=7 * n),
                "signup_date": date(2024, 3, 1) + timedelta(days=n % 12),
                "age": None if n % 9 == 0 else 20 + n % 25,
            },
        )
        for n in range(60)
    ]


def _select(app: FastAPI, tenant: Tenant, now: datetime) -> set[str]:
    runtime = app.state.runtime
    with app.state.session_factory() as session:
        schema = compiled.workspace_schema(session, tenant.workspace_id)
        pids = evaluation.select_members(
            session,
            runtime=runtime,
            workspace_id=tenant.workspace_id,
            rule=evaluation.bound_rule(RULE, schema),
            now=now,
        )
    ids = runtime.profiles.external_ids_for(tenant.workspace_id, list(pids))
    return {external_id for external_id in ids if external_id is not None}


def test_a_clock_rule_compiled_once_answers_at_each_reference_time(
    app: FastAPI, tenant: Tenant
) -> None:
    oracle = Oracle(SCHEMA)
    declare(tenant.admin, SCHEMA)
    ingest(tenant.write, oracle, _records())
    compiled.compiled_sql.cache_clear()
    moments = [START + timedelta(days=days, hours=5) for days in (2, 5, 9, 14, 30)]
    answers = [_select(app, tenant, moment) for moment in moments]
    # One compilation served every run: the time is a bound parameter, not part of the text.
    assert compiled.compiled_sql.cache_info().misses == 1
    assert compiled.compiled_sql.cache_info().hits == len(moments) - 1
    for moment, answer in zip(moments, answers, strict=True):
        assert answer == oracle.select(ORACLE_SQL, now=moment), moment
    assert len({frozenset(answer) for answer in answers}) > 2  # the answers did move with time


def test_cached_compilation_is_checked_like_any_condition(app: FastAPI, tenant: Tenant) -> None:
    """The engine's condition check is cached by text: the rule's SQL is parsed once."""
    declare(tenant.admin, SCHEMA)
    conditions.checked_condition.cache_clear()
    compiled.compiled_sql.cache_clear()
    for days in (1, 2, 3):
        _select(app, tenant, START + timedelta(days=days))
    assert conditions.checked_condition.cache_info().misses == 1


def test_a_rule_that_reads_no_clock_is_compiled_once_on_every_engine() -> None:
    """Without a ``$now`` parameter (PostgreSQL, ClickHouse), a rule whose text holds no time
    is still compiled once; one that reads the clock is compiled per run there."""
    schema = compiled.frozen_schema({"age": AttributeType.INTEGER, "seen": AttributeType.TIMESTAMP})
    plain = compiled.bound_rule("age > 3 AND seen > TIMESTAMP '2024-01-01 00:00:00+00'", schema)
    clock = compiled.bound_rule("seen > now() - INTERVAL 1 DAY", schema)
    for dialect in DIALECTS:
        where = compiled.compiled_sql(plain, schema, dialect).where
        assert where == compiled.to_engine_sql(plain, dialect, {}, now=datetime.now(UTC))
        reads_clock = compiled.compiled_sql(clock, schema, dialect).where is None
        assert reads_clock is (dialect not in PARAMETER_DIALECTS)
