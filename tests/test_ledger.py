"""The ledger's own checks (tests/ledger.py), on ledgers made up here."""

from __future__ import annotations

from tests.ledger import Ledger, documented_codes, problems


def test_generic_codes_are_documented_and_apart_from_the_table() -> None:
    every, table, generic = documented_codes()
    assert {"bad_request", "precondition_failed", "service_unavailable"} <= generic
    assert generic <= every
    assert {"limit_out_of_range", "unknown_filter", "rule_not_streamable"} <= table
    assert "id_missing" not in table  # an import row code, not an answer's


def test_an_answered_code_must_be_documented_on_any_run() -> None:
    ledger = Ledger(answered={"validation_failed", "made_up_code"}, codes={"made_up_code"})
    assert problems(ledger, complete=False) == [
        "code 'made_up_code' was answered but is not in docs/errors.md"
    ]


def test_an_undeclared_status_is_reported_on_any_run() -> None:
    ledger = Ledger(undeclared={"GET /v1/audiences answered 418"})
    assert problems(ledger, complete=False) == [
        "GET /v1/audiences answered 418, a status it does not declare"
    ]


def test_codes_never_produced_are_reported_only_on_a_complete_run() -> None:
    _, table, generic = documented_codes()
    produced = Ledger(codes=set(table - generic - {"run_expired"}))
    assert problems(produced, complete=False) == []
    assert problems(produced, complete=True) == [
        "code 'run_expired' of docs/errors.md was produced by no test"
    ]


def test_worker_ledgers_merge_on_the_controller() -> None:
    controller = Ledger()
    for worker in (Ledger(codes={"a"}, deselected=1), Ledger(codes={"b"}, answered={"b"})):
        controller.merge(worker.dump())
    assert controller == Ledger(codes={"a", "b"}, answered={"b"}, deselected=1)
