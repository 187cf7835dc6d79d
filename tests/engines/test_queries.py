"""Member queries (external audiences' SQL sources): what the checker admits and refuses, with
positions, and what each engine's ``select_query_pids`` returns against an oracle in Python."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audiences.engines.base import EventRecord, ProfileEngine
from audiences.engines.queries import check_select, point_at
from audiences.errors import Unprocessable, ValidationFailed
from audiences.schemas.attributes import AttributeType
from tests.engines.conftest import WS
from tests.engines.kinds import Store

REFUSED = [
    ("DROP TABLE profiles", "sql_not_select", "DROP TABLE profiles"),
    ("CREATE TABLE x AS SELECT 1", "sql_not_select", None),
    ("DELETE FROM profiles", "sql_not_select", None),
    ("UPDATE profiles SET extra = NULL", "sql_not_select", None),
    ("PRAGMA version", "sql_not_select", None),
    ("ATTACH 'other.duckdb'", "sql_not_select", None),
    ("SELECT external_id FROM profiles; DROP TABLE profiles", "sql_multiple_statements", None),
    ("SELECT external_id FROM profiles_other", "sql_table_not_allowed", "profiles_other"),
    ("SELECT external_id FROM main.profiles", "sql_table_not_allowed", "main.profiles"),
    ("SELECT table_name FROM information_schema.tables", "sql_table_not_allowed", None),
    ("SELECT * FROM '/etc/passwd'", "sql_table_not_allowed", "'/etc/passwd'"),
    ("SELECT c FROM read_csv('/etc/passwd')", "sql_table_not_allowed", None),
    ("SELECT content FROM read_text('/etc/passwd')", "sql_table_not_allowed", None),
    ("SELECT getenv('HOME') FROM profiles", "sql_function_not_allowed", "getenv('HOME')"),
    (
        "SELECT external_id FROM profiles WHERE external_id IN (SELECT c FROM read_csv('x'))",
        "sql_function_not_allowed",
        None,
    ),
    ("SELECT nextval('pids_acme') FROM profiles", "sql_function_not_allowed", None),
    ("SELECT current_setting('home_directory')", "sql_function_not_allowed", None),
    ("SELECT external_id FROM profiles, duckdb_tables()", "sql_table_not_allowed", None),
    ("SELECT external_id, pid FROM profiles", "sql_one_column", None),
    ("SELECT * FROM profiles", "sql_one_column", None),
    ("SELECT 1 INTO copy FROM profiles", "sql_not_read_only", None),
    ("WITH profiles AS (SELECT 1 AS pid) SELECT pid FROM profiles", "sql_table_not_allowed", None),
    ("SELECT external_id FROM profiles WHERE", "sql_syntax", None),
    # A CTE admits a table of its name only in its own scope (the review's two leaks).
    (
        "SELECT external_id FROM profiles WHERE pid IN (WITH duckdb_tables AS (SELECT 1) "
        "SELECT -1) OR CAST((SELECT string_agg(table_name, ',') FROM duckdb_tables) AS INT) = 1",
        "sql_table_not_allowed",
        None,
    ),
    (
        "SELECT external_id FROM profiles WHERE pid IN (WITH profiles_other AS (SELECT 1) "
        "SELECT -1) OR CAST((SELECT string_agg(external_id, ',') FROM profiles_other) AS INT) = 1",
        "sql_table_not_allowed",
        None,
    ),
    (  # a nested CTE shadowing an outer one does not reach past its subquery
        "WITH a AS (SELECT 1 AS v) SELECT v FROM (WITH b AS (SELECT 2 AS v) SELECT v FROM b) s, b",
        "sql_table_not_allowed",
        None,
    ),
    (
        "WITH profiles_other AS (SELECT * FROM profiles_other) SELECT external_id "
        "FROM profiles_other",
        "sql_table_not_allowed",
        None,
    ),
    (
        "SELECT n FROM (WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n FROM r) SELECT n "
        "FROM r) x WHERE (SELECT count(*) FROM r) > 0",
        "sql_table_not_allowed",
        None,
    ),
    (
        "SELECT external_id FROM profiles, LATERAL (WITH duckdb_settings AS (SELECT 1) SELECT 1)"
        " WHERE (SELECT count(*) FROM duckdb_settings) > 0",
        "sql_table_not_allowed",
        None,
    ),
    (
        "SELECT external_id FROM profiles WHERE pid IN (SELECT x FROM (VALUES (1)) AS "
        "duckdb_tables(x)) OR (SELECT count(*) FROM duckdb_tables) > 0",
        "sql_table_not_allowed",
        None,
    ),
    (
        "SELECT x FROM (WITH duckdb_tables AS (SELECT 1 AS x) SELECT x FROM duckdb_tables) "
        "UNION SELECT count(*) FROM duckdb_tables()",
        "sql_table_not_allowed",
        None,
    ),
    (
        'SELECT external_id FROM profiles WHERE pid IN (WITH "x.csv" AS (SELECT 1) SELECT 1) '
        "OR (SELECT count(*) FROM 'x.csv') > 0",
        "sql_table_not_allowed",
        None,
    ),
    ("SELECT CAST(COLUMNS(*) AS INT) FROM profiles", "sql_function_not_allowed", "COLUMNS(*)"),
    (
        "SELECT external_id FROM profiles WHERE COLUMNS('.*') IS NULL",
        "sql_function_not_allowed",
        None,
    ),
    ("SELECT CAST(current_database() AS INT)", "sql_function_not_allowed", "current_database()"),
    ("SELECT CAST(version() AS INT)", "sql_function_not_allowed", "version()"),
    ("SELECT CAST(current_user AS INT)", "sql_function_not_allowed", None),
    ("SELECT CAST(current_schema() AS INT)", "sql_function_not_allowed", None),
    ("SELECT CAST(current_catalog AS INT)", "sql_function_not_allowed", None),
    ("SELECT CAST(session_user AS INT)", "sql_function_not_allowed", None),
    ("   ", "sql_not_select", None),
    ("-- only a comment", "sql_not_select", None),
    # Names the engine reads as its own values when no column has them (quoted too).
    ("SELECT 'u1' WHERE current_schema = 'main'", "sql_function_not_allowed", "current_schema"),
    ("SELECT 'u1' WHERE current_role IS NOT NULL", "sql_function_not_allowed", "current_role"),
    (
        "SELECT external_id FROM profiles WHERE \"user\" = 'duckdb'",
        "sql_function_not_allowed",
        None,
    ),
]


def test_an_attribute_named_as_the_engine_s_values_is_read_qualified() -> None:
    check_select("SELECT external_id FROM profiles WHERE profiles.user = 'ann'", "duckdb")
    check_select("SELECT p.external_id FROM profiles AS p WHERE p.current_role = 'x'", "duckdb")


@pytest.mark.parametrize(("query", "code", "spot"), REFUSED)
def test_unsafe_queries_are_refused_with_a_code_and_a_position(
    query: str, code: str, spot: str | None
) -> None:
    with pytest.raises(ValidationFailed) as refused:
        check_select(query, "duckdb")
    assert refused.value.code == "sync_query_invalid"
    problem = next(p for p in refused.value.errors if p.code == code)
    assert problem.location == ("body", "source", "query")
    if spot is not None:
        assert (problem.start, problem.end) == (query.index(spot), query.index(spot) + len(spot))
        assert (problem.line, problem.col) == (1, query.index(spot) + 1)


@pytest.mark.parametrize("name", ["duckdb_tables", "profiles_other"])
def test_a_cte_out_of_scope_is_refused_where_the_table_is_read(name: str) -> None:
    query = (
        f"SELECT external_id FROM profiles WHERE pid IN (WITH {name} AS (SELECT 1) SELECT -1) "
        f"OR CAST((SELECT string_agg(external_id, ',') FROM {name}) AS INT) = 1"
    )
    with pytest.raises(ValidationFailed) as refused:
        check_select(query, "duckdb")
    (problem,) = refused.value.errors
    assert problem.code == "sql_table_not_allowed"
    assert (problem.start, problem.end) == (query.rindex(name), query.rindex(name) + len(name))


def test_a_query_nested_past_the_parser_is_refused_not_crashed() -> None:
    query = "SELECT " + "(" * 4900 + "pid" + ")" * 4900 + " FROM profiles"
    with pytest.raises(ValidationFailed) as refused:
        check_select(query, "duckdb")
    assert [problem.code for problem in refused.value.errors] == ["sql_too_deep"]


def test_a_position_on_a_later_line_names_that_line() -> None:
    query = "SELECT external_id\nFROM profiles\nWHERE getenv('x') = ''"
    with pytest.raises(ValidationFailed) as refused:
        check_select(query, "duckdb")
    (problem,) = refused.value.errors
    assert (problem.code, problem.line, problem.col) == ("sql_function_not_allowed", 3, 7)


def test_safe_queries_point_at_the_workspace_tables_under_their_public_names() -> None:
    query = check_select(
        "SELECT p.external_id FROM profiles AS p JOIN events ON events.pid = p.pid "
        "WHERE events.event = 'buy' UNION SELECT external_id FROM profiles WHERE age > 3",
        "duckdb",
    )
    pointed = point_at(query, {"profiles": '"profiles_w"', "events": '"events_w"'}, "duckdb")
    assert pointed == (
        'SELECT "p"."external_id" FROM "profiles_w" AS "p" JOIN "events_w" AS "events" ON '
        '"events"."pid" = "p"."pid" WHERE "events"."event" = \'buy\' UNION SELECT "external_id" '
        'FROM "profiles_w" AS "profiles" WHERE "age" > 3'
    )


def test_every_cte_is_renamed_with_the_tables_that_read_it_in_scope() -> None:
    query = check_select(
        "WITH a AS (SELECT pid FROM profiles) SELECT a.pid FROM a "
        "WHERE pid IN (WITH a AS (SELECT 2 AS pid) SELECT pid FROM a) -- a comment",
        "duckdb",
    )
    pointed = point_at(query, {"profiles": '"profiles_w"', "events": '"events_w"'}, "duckdb")
    assert pointed == (
        'WITH "member_query_cte_0" AS (SELECT "pid" FROM "profiles_w" AS "profiles") SELECT '
        '"a"."pid" FROM "member_query_cte_0" AS "a" WHERE "pid" IN (WITH "member_query_cte_1" '
        'AS (SELECT 2 AS "pid") SELECT "pid" FROM "member_query_cte_1" AS "a")'
    )


@pytest.fixture
def two_workspaces(store: Store) -> ProfileEngine:
    """On each engine kind, the ``acme`` workspace and a neighbour, ``other``, whose ids must
    never come back."""
    engine = store.open()
    engine.ensure_attributes(WS, {"age": AttributeType.INTEGER, "plan": AttributeType.STRING})
    engine.upsert_profiles("other", [("secret-1", {"age": 50}), ("secret-2", {})])
    return engine


PROFILES = st.lists(
    st.tuples(
        st.one_of(st.none(), st.integers(min_value=0, max_value=99)),
        st.one_of(st.none(), st.sampled_from(["free", "pro", "team"])),
    ),
    max_size=40,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(profiles=PROFILES, threshold=st.integers(0, 100), plan=st.sampled_from(["free", "pro"]))
def test_members_are_the_ids_the_query_returns(
    two_workspaces: ProfileEngine,
    profiles: list[tuple[int | None, str | None]],
    threshold: int,
    plan: str,
) -> None:
    engine = two_workspaces
    prefix = f"h{threshold}-{plan}-{len(profiles)}-"
    records = [
        (f"{prefix}{n}", {"age": age, "plan": value}) for n, (age, value) in enumerate(profiles)
    ]
    written = engine.upsert_profiles(WS, records)
    pid_of = {result.external_id: result.pid for result in written}
    # The oracle: SQL's three-valued WHERE in Python (a NULL age or plan is not a member).
    wanted = {
        pid_of[external]
        for external, values in records
        if values["age"] is not None and values["age"] >= threshold and values["plan"] == plan
    }
    where = f"age >= {threshold} AND plan = '{plan}' AND external_id LIKE '{prefix}%'"
    by_id = engine.select_query_pids(WS, f"SELECT external_id FROM profiles WHERE {where}")
    by_pid = engine.select_query_pids(WS, f"SELECT pid FROM profiles WHERE {where}")
    assert set(by_id) == set(by_pid) == wanted


def test_a_query_reads_events_and_never_another_workspace(two_workspaces: ProfileEngine) -> None:
    engine = two_workspaces
    now = datetime(2026, 1, 1, tzinfo=UTC)
    engine.write_events(WS, [EventRecord("buyer", "buy", now), EventRecord("looker", "view", now)])
    found = engine.select_query_pids(WS, "SELECT DISTINCT pid FROM events WHERE event = 'buy'")
    assert engine.external_ids_for(WS, list(found)) == ["buyer"]
    literal = engine.select_query_pids(WS, "SELECT 'secret-1' FROM profiles")
    assert list(literal) == []


def test_a_query_that_fails_on_the_data_says_why_without_the_real_tables(
    two_workspaces: ProfileEngine,
) -> None:
    with pytest.raises(Unprocessable) as failed:
        two_workspaces.select_query_pids(WS, "SELECT external_id FROM profiles WHERE nope > 1")
    assert failed.value.code == "engine_query_failed"
    assert "nope" in failed.value.detail
    assert "profiles_" not in failed.value.detail
    with pytest.raises(ValidationFailed):
        two_workspaces.select_query_pids(WS, "SELECT external_id FROM profiles_other")


@pytest.mark.parametrize("column", ["pid * 1.5", "updated_at"])
def test_a_column_neither_ids_nor_pids_is_refused_not_read_as_no_one(
    two_workspaces: ProfileEngine, column: str
) -> None:
    """Numbers with a fraction or times name no profile: the query is refused with
    the type it returns (a sync records that and keeps the members), where reading them as
    ids would have emptied the audience; text and integers are still read."""
    engine = two_workspaces
    engine.upsert_profiles(WS, [("typed-1", {"age": 5})])
    with pytest.raises(Unprocessable) as refused:
        engine.select_query_pids(WS, f"SELECT {column} FROM profiles")
    assert refused.value.code == "sync_query_invalid"
    assert "returns a column of type" in refused.value.detail
    by_text = engine.select_query_pids(WS, "SELECT lower(external_id) FROM profiles")
    by_pid = engine.select_query_pids(WS, "SELECT pid FROM profiles WHERE age = 5")
    assert "typed-1" in engine.external_ids_for(WS, list(by_text))
    assert engine.external_ids_for(WS, list(by_pid)) == ["typed-1"]


def test_a_query_running_past_its_time_is_stopped(two_workspaces: ProfileEngine) -> None:
    engine = two_workspaces
    engine.upsert_profiles(WS, [(f"slow-{n}", {"age": n}) for n in range(300)])
    endless = "SELECT a.pid FROM profiles a, profiles b, profiles c, profiles d WHERE a.age > -1"
    with pytest.raises(Unprocessable) as stopped:
        engine.select_query_pids(WS, endless, timeout_seconds=0.2)
    assert stopped.value.code == "engine_query_timeout"
    found = engine.select_query_pids(WS, "SELECT pid FROM profiles", timeout_seconds=30)
    assert len(found) == 300  # the engine answers as before


ATTACKS = [
    "SELECT external_id FROM profiles WHERE pid IN (WITH {t} AS (SELECT 1) SELECT -1) "
    "OR CAST((SELECT string_agg(external_id, ',') FROM {t}) AS INT) = 1",
    "SELECT external_id FROM profiles WHERE pid IN (WITH duckdb_tables AS (SELECT 1) SELECT -1) "
    "OR CAST((SELECT string_agg(table_name, ',') FROM duckdb_tables) AS INT) = 1",
    "WITH {t} AS (SELECT * FROM {t}) SELECT external_id FROM {t}",
    "SELECT x FROM (WITH {t} AS (SELECT 1 AS x) SELECT x FROM {t}) UNION ALL "
    "SELECT external_id FROM {t}",
    "WITH RECURSIVE {t}(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM {t} WHERE n < 2) "
    "SELECT external_id FROM profiles WHERE pid IN (SELECT n FROM {t})",
    "SELECT external_id FROM profiles, LATERAL (SELECT external_id AS e FROM {t}) x",
    "SELECT e FROM (VALUES ('a')) AS {t}(e)",
    "SELECT CAST(min(external_id) AS INT) FROM profiles WHERE external_id IN "
    "(SELECT external_id FROM {t})",
    "SELECT external_id FROM profiles WHERE CAST((SELECT min(external_id) FROM {t}) AS INT) = 1",
    "SELECT CAST(string_agg(external_id, ',') AS INT) FROM profiles",
    "SELECT CAST(COLUMNS(*) AS INT) FROM profiles",
    "SELECT CAST(current_database() AS INT)",
    "SELECT external_id FROM '{t}'",
]
"""Queries trying to read the neighbour's table (``{t}``: its real name) or the catalog."""


def _profile_table(engine: ProfileEngine, workspace_id: str) -> str:
    """The real, unqualified name of a workspace's profile table on this engine (each engine
    keeps it in its workspace state: DuckDB as ``table``, the others as ``profiles``)."""
    state = engine._state(workspace_id) if hasattr(engine, "_state") else None  # type: ignore[attr-defined]
    if state is None:
        state = engine._workspace(workspace_id)  # type: ignore[attr-defined]
    name = str(getattr(state, "table", None) or state.profiles)
    return name.rsplit(".", 1)[-1].strip('"`')


@pytest.mark.parametrize("attack", ATTACKS)
def test_a_second_workspace_never_shows_in_results_or_errors(
    two_workspaces: ProfileEngine, attack: str
) -> None:
    engine = two_workspaces
    engine.upsert_profiles(WS, [("mine-1", {"age": 1}), ("mine-2", {"age": 2})])
    table = _profile_table(engine, "other")
    query = attack.format(t=table)
    try:
        found = engine.select_query_pids(WS, query, timeout_seconds=10)
    except (ValidationFailed, Unprocessable) as error:
        said = " ".join([error.detail, *(p.message for p in getattr(error, "errors", []))])
        assert "secret" not in said
        assert table not in said or isinstance(error, ValidationFailed)  # the client's own text
        assert "events_other" not in said and "pids_other" not in said
        return
    assert set(engine.external_ids_for(WS, list(found))) <= {"mine-1", "mine-2"}
