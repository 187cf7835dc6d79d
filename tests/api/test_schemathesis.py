"""Schemathesis over the whole OpenAPI schema, in process, with every one of its checks.

Each operation is fuzzed with positive (schema-valid) and negative (schema-violating) cases
(an operation without inputs has no negative cases);
every response must match the declared statuses, headers and bodies, and no input may cause
a 5xx. Driven from a plain test (schemathesis' pytest plugin does not run on pytest 9 yet).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, CheckContext, GenerationMode
from schemathesis.core.parameters import ParameterLocation
from schemathesis.core.transport import Response
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from audiences.config import Settings
from audiences.schemas.api_keys import Role
from tests.factories import mint_key, own_app

EXAMPLES_PER_OPERATION = 20
# What OpenAPI cannot express (docs/api.md lists each, with the reason): a body naming a group
# that does not exist, a rule outside the rule language, a profile that contradicts the
# workspace's attributes, an event its event properties or the clock, a file without the
# columns it needs (422), a cursor this service did not issue or a cursor together with an
# offset (400), an ETag that is not current (412), and the destination checks no schema can
# state (stored audiences and attributes, the SSRF guard, a secret's decoded length, fields
# that depend on `kind`, the operator's file root and buckets). Schema-valid data refused with
# any other code is still a failure.
UNDESCRIBABLE_ERRORS = {
    "unknown_group",
    "rule_invalid",
    "profile_invalid",
    "event_invalid",
    "import_file_invalid",
    "invalid_cursor",
    "cursor_with_offset",
    "version_mismatch",
    "sync_query_invalid",
    "sync_path_not_allowed",
    "sync_not_streamable",
    "url_not_allowed",
    "unknown_audience",
    "unknown_attribute",
    "secret_invalid",
    "destination_fields_mismatch",
    "destination_kind_fixed",
    "file_destinations_disabled",
    "path_not_allowed",
    "s3_destinations_disabled",
    "bucket_not_allowed",
}


def _accepts_valid_data(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    if (
        response.status_code in (400, 412, 422)
        and response.json().get("code") in UNDESCRIBABLE_ERRORS
    ):
        return True
    return positive_data_acceptance(ctx, response, case)


def _rejects_invalid_data(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    # A body over a documented size limit (more than 10,000 events, say) is refused with 413 and
    # its own code before it is validated, which schemathesis does not count as a refusal.
    if response.status_code == 413:
        return True
    return negative_data_rejection(ctx, response, case)


def _drops_the_api_key(case: Case) -> bool:
    """Whether a negative case's mutations include leaving out the ``Authorization`` header."""
    data = case.meta.phase.data if case.meta is not None else None
    return any(
        mutation.parameter_location is ParameterLocation.HEADER
        and "Authorization" in (mutation.parameter, mutation.original_value)
        for mutation in getattr(data, "mutations", ())
    )


@pytest.fixture
def fuzzed_app(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    """An app of its own per test: schemathesis runs the app's lifespan, whose end closes the
    app's profile engine."""
    with own_app(settings, tmp_path_factory.mktemp("fuzz"), worker_threads=0) as application:
        yield application


@pytest.fixture
def api_schema(fuzzed_app: FastAPI) -> Any:
    loaded = schemathesis.openapi.from_asgi("/openapi.json", fuzzed_app)
    # NUL characters are refused everywhere (422, documented in docs/api.md): PostgreSQL text
    # cannot hold them. tests/api/test_audiences.py checks that refusal on its own.
    loaded.config.generation.update(allow_x00=False)
    # Every check schemathesis has (`--checks all`); only the response-time limit stays off,
    # as it has no limit to hold (timings are no test's business here).
    loaded.config.checks.update(included_check_names=["all"])
    return loaded


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_conforms_to_its_schema(
    fuzzed_app: FastAPI, api_schema: Any, mode: GenerationMode
) -> None:
    token, _ = mint_key(fuzzed_app, f"schemathesis-{mode.value}", Role.ADMIN)
    auth = {"Authorization": f"Bearer {token}"}
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 15
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def check(case: Any) -> None:
            if case.headers and "Idempotency-Key" in case.headers:
                # Key reuse (422 by design) is tested on its own; here keys stay unique.
                case.headers["Idempotency-Key"] = uuid.uuid4().hex
            case.call_and_validate(
                # A case whose negation is a missing API key must go without ours.
                headers={} if _drops_the_api_key(case) else auth,
                excluded_checks=[positive_data_acceptance, negative_data_rejection],
                additional_checks=[_accepts_valid_data, _rejects_invalid_data],
            )

        try:
            check()
        except Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE, f"{operation.label}: no valid input"
        except Exception as exc:
            raise AssertionError(f"{operation.label} ({mode.value}): {exc}") from exc


def test_every_deliberate_refusal_of_valid_data_is_documented() -> None:
    documented = (Path(__file__).parents[2] / "docs" / "api.md").read_text()
    section = documented.split("### What the OpenAPI schema cannot say")[1].split("\n## ")[0]
    assert {code for code in UNDESCRIBABLE_ERRORS if f"`{code}`" not in section} == set()
