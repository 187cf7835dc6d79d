"""Typed exceptions: one class per kind of failure, each carrying the problem details, and
catchable as the server's own error classes."""

from __future__ import annotations

import pytest
from fastapi import FastAPI

from audiences import errors, sdk
from audiences.schemas.api_keys import Role
from audiences.sdk import (
    ApiError,
    BadRequest,
    Client,
    Conflict,
    Forbidden,
    NotFound,
    RuleError,
    Unauthorized,
    ValidationFailed,
)
from audiences.sdk import errors as sdk_errors
from tests.factories import Tenant
from tests.sdk.conftest import PortalTransport, sdk_client


def test_not_found_carries_code_and_request_id_and_is_the_servers_class(client: Client) -> None:
    with pytest.raises(errors.NotFound) as caught:
        client.audiences.get("nope")
    error = caught.value
    assert isinstance(error, NotFound) and isinstance(error, ApiError)
    assert error.code == "audience_not_found" and error.http_status == 404
    assert error.request_id and error.request_id in str(error)
    assert error.problem.status == 404


def test_rule_and_field_problems_list_each_error(client: Client) -> None:
    with pytest.raises(RuleError) as rule:
        client.audiences.create(key="bad", name="Bad", kind="dynamic", rule="agee > 3")
    assert rule.value.code == "rule_invalid"
    assert [item.code for item in rule.value.errors] == ["rule_unknown_attribute"]
    assert rule.value.errors[0].suggestion
    with pytest.raises(ValidationFailed) as fields:
        client.audiences.create(key="BAD KEY", name="", kind="static")
    assert {item.location[-1] for item in fields.value.errors} >= {"key", "name"}
    with pytest.raises(BadRequest) as sort:
        client.audiences.list(sort="-nothing").first_page()
    assert sort.value.code == "unknown_sort_field"


def test_conflict_forbidden_and_unauthorized(app: FastAPI, tenant: Tenant, client: Client) -> None:
    client.audiences.create(key="once", name="Once", kind="static")
    with pytest.raises(Conflict) as duplicate:
        client.audiences.create(key="once", name="Twice", kind="static")
    assert duplicate.value.code == "duplicate_key"
    with sdk_client(app, tenant, Role.READ) as reader, pytest.raises(Forbidden):
        reader.audiences.create(key="nope", name="No", kind="static")
    transport = PortalTransport(tenant.admin, app)
    stranger = Client("http://testserver", key="aud_wrong", transport=transport)
    with stranger, pytest.raises(Unauthorized) as caught:
        stranger.audiences.list().first_page()
    assert caught.value.code == "invalid_api_key"


def test_every_exception_class_is_exported_and_maps_a_status() -> None:
    classes = [
        value
        for value in vars(sdk_errors).values()
        if isinstance(value, type) and issubclass(value, errors.AudiencesError)
        and value.__module__ == sdk_errors.__name__
    ]  # fmt: skip
    assert {cls.__name__ for cls in classes} <= set(sdk.__all__)
    for cls in sdk_errors.BY_STATUS.values():
        assert cls in classes
