"""The service on the ClickHouse profile engine (chdb in process), end to end through the API.

Membership tests of ``test_membership`` and ``test_behaviour_membership`` run again here on an
app whose profiles and events live in ClickHouse (``AUDIENCES_PROFILE_ENGINE=clickhouse``): the
demo's audiences (attribute, clock, composite; two behavioural ones, a window and a sequence),
each checked against hand-written DuckDB SQL over the test's own copy of the data; a run that
overflows on the engine; deletion; synchronous evaluation. ``tests/services/test_engines.py``
covers imports and streaming on every engine.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI

from audiences.api.app import create_app
from audiences.config import Settings
from audiences.engines.clickhouse import ClickHouseEngine
from tests.api import test_behaviour_membership as behaviour
from tests.api.test_membership import (  # noqa: F401  (run here on ClickHouse)
    small,
    test_a_rule_that_fails_on_the_engine_keeps_the_last_members,
    test_batch_runs_equal_the_oracle_then_follow_changes,
    test_deleting_a_profile_removes_it_everywhere_and_from_kept_runs,
    test_synchronous_evaluation_agrees_with_batch_membership,
    world,
)
from tests.engines.kinds import chdb_folder
from tests.factories import Tenant


@pytest.fixture(scope="module")
def app(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    """The real application with its profiles in ClickHouse in process (the process's chdb
    folder, shared with the engine tests: workspaces keep them apart)."""
    folder = tmp_path_factory.mktemp("clickhouse-app")
    url = f"sqlite:///{folder / 'audiences.db'}" if database_url.startswith("sqlite") else None
    settings = Settings(
        data_dir=folder,
        database_url=url or database_url,
        rate_limit="100000/minute",
        profile_engine="clickhouse",
        profile_engine_url=f"chdb:{chdb_folder()}",
    )
    application = create_app(settings)
    assert isinstance(application.state.runtime.profiles, ClickHouseEngine)
    yield application
    application.state.engine.dispose()


@pytest.mark.parametrize("key", ["big-spenders-30d", "pricing-then-signup"])
def test_behavioural_demo_audiences_hold_what_hand_written_sql_finds(
    tenant: Tenant, key: str
) -> None:
    behaviour.test_each_behavioural_demo_audience_holds_what_hand_written_sql_finds(tenant, key)
