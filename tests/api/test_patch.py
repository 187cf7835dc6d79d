"""PATCH with JSON Patch (RFC 6902) and JSON merge patch (RFC 7386), edge cases included."""

from __future__ import annotations

from typing import Any

import pytest

from tests.client import ApiClient
from tests.factories import Tenant, make_audience, make_group

JSON_PATCH = {"Content-Type": "application/json-patch+json"}
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}


def _patch(client: ApiClient, audience: dict[str, Any], doc: Any, headers: dict[str, str]) -> Any:
    return client.patch(f"/v1/audiences/{audience['id']}", json=doc, headers=headers)


def test_json_patch_edits_fields_and_bumps_the_version(tenant: Tenant) -> None:
    audience = make_audience(tenant.write, labels=["a"])
    ops = [
        {"op": "replace", "path": "/name", "value": "Patched"},
        {"op": "add", "path": "/labels/-", "value": "b"},
        {"op": "add", "path": "/metadata/owner", "value": "growth"},
        {"op": "replace", "path": "/refresh_policy", "value": {"mode": "streaming"}},
    ]
    response = _patch(tenant.write, audience, ops, JSON_PATCH)
    assert response.status_code == 200, response.text
    patched = response.json()
    assert patched["name"] == "Patched"
    assert patched["labels"] == ["a", "b"]
    assert patched["metadata"] == {"owner": "growth"}
    assert patched["refresh_policy"] == {"mode": "streaming"}
    assert patched["version"] == 2
    assert response.headers["etag"] == '"2"'


def test_label_only_change_bumps_the_version(tenant: Tenant) -> None:
    audience = make_audience(tenant.write, labels=["a", "b"])
    ops = [{"op": "move", "from": "/labels/0", "path": "/labels/-"}]
    response = _patch(tenant.write, audience, ops, JSON_PATCH)
    assert response.json()["labels"] == ["b", "a"]
    assert response.json()["version"] == 2


def test_test_op_guards_the_patch(tenant: Tenant) -> None:
    audience = make_audience(tenant.write, name="Before")
    ok = [
        {"op": "test", "path": "/version", "value": 1},
        {"op": "replace", "path": "/name", "value": "After"},
    ]
    assert _patch(tenant.write, audience, ok, JSON_PATCH).json()["name"] == "After"
    stale = [
        {"op": "test", "path": "/name", "value": "Before"},
        {"op": "replace", "path": "/name", "value": "X"},
    ]
    response = _patch(tenant.write, audience, stale, JSON_PATCH)
    assert response.status_code == 409
    assert response.json()["code"] == "patch_test_failed"
    assert tenant.read.get(f"/v1/audiences/{audience['id']}").json()["name"] == "After"


@pytest.mark.parametrize(
    "op",
    [
        {"op": "replace", "path": "/id", "value": "x"},
        {"op": "replace", "path": "/version", "value": 9},
        {"op": "replace", "path": "/size", "value": 9},
        {"op": "add", "path": "/created_by", "value": "me"},
        {"op": "remove", "path": "/evaluation"},
        {"op": "replace", "path": "", "value": {}},
        {"op": "move", "from": "/id", "path": "/name"},
    ],
)
def test_read_only_paths_are_refused(tenant: Tenant, op: dict[str, Any]) -> None:
    audience = make_audience(tenant.write)
    response = _patch(tenant.write, audience, [op], JSON_PATCH)
    assert response.status_code == 422
    assert response.json()["code"] == "patch_forbidden_path"
    assert tenant.read.get(f"/v1/audiences/{audience['id']}").json() == audience


@pytest.mark.parametrize(
    ("doc", "code"),
    [
        ({"op": "replace"}, "patch_malformed"),
        ([{"path": "/name"}], "patch_malformed"),
        ([{"op": "frobnicate", "path": "/name"}], "patch_malformed"),
        ([{"op": "replace", "path": 3, "value": 1}], "patch_malformed"),
        ([{"op": "replace", "path": "/labels/7", "value": "x"}], "patch_failed"),
        ([{"op": "remove", "path": "/metadata/missing"}], "patch_failed"),
        ([{"op": "remove", "path": "/name"}], "validation_failed"),
        ([{"op": "replace", "path": "/kind", "value": "static"}], "validation_failed"),
        ([{"op": "add", "path": "/unknown", "value": 1}], "patch_forbidden_path"),
    ],
)
def test_bad_patches_get_a_clear_422_and_change_nothing(
    tenant: Tenant, doc: Any, code: str
) -> None:
    audience = make_audience(tenant.write)
    response = _patch(tenant.write, audience, doc, JSON_PATCH)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == code
    assert tenant.read.get(f"/v1/audiences/{audience['id']}").json() == audience


def test_merge_patch_merges_objects_and_null_removes(tenant: Tenant) -> None:
    audience = make_audience(tenant.write, description="old", metadata={"a": 1, "b": {"c": 2}})
    doc = {"description": None, "metadata": {"b": {"c": None, "d": 3}}, "archived": True}
    response = _patch(tenant.write, audience, doc, MERGE_PATCH)
    assert response.status_code == 200, response.text
    patched = response.json()
    assert patched["description"] is None
    assert patched["metadata"] == {"a": 1, "b": {"d": 3}}
    assert patched["archived"] is True
    assert patched["version"] == 2


def test_merge_patch_refuses_read_only_and_non_objects(tenant: Tenant) -> None:
    audience = make_audience(tenant.write)
    forbidden = _patch(tenant.write, audience, {"version": 5, "name": "x"}, MERGE_PATCH)
    assert forbidden.status_code == 422
    assert forbidden.json()["code"] == "patch_forbidden_path"
    not_object = _patch(tenant.write, audience, ["name"], MERGE_PATCH)
    assert not_object.json()["code"] == "patch_malformed"
    removes_required = _patch(tenant.write, audience, {"key": None}, MERGE_PATCH)
    assert removes_required.json()["code"] == "validation_failed"
    assert tenant.read.get(f"/v1/audiences/{audience['id']}").json() == audience


def test_patch_content_types(tenant: Tenant) -> None:
    audience = make_audience(tenant.write)
    plain = _patch(tenant.write, audience, {"name": "x"}, {"Content-Type": "application/json"})
    assert plain.status_code == 415
    # An array can only be a JSON Patch: taken as one when sent as plain JSON.
    ops = [{"op": "replace", "path": "/name", "value": "Plain"}]
    as_json = _patch(tenant.write, audience, ops, {"Content-Type": "application/json"})
    assert as_json.status_code == 200, as_json.text
    assert (as_json.json()["name"], as_json.json()["version"]) == ("Plain", 2)
    bad = _patch(tenant.write, audience, [{"op": "frobnicate", "path": "/name"}], {})
    assert bad.json()["code"] == "patch_malformed"
    broken = tenant.write.patch(
        f"/v1/audiences/{audience['id']}", content=b"[{", headers=JSON_PATCH
    )
    assert broken.status_code == 400
    assert broken.json()["code"] == "malformed_json"


def test_patch_honours_if_match(tenant: Tenant) -> None:
    audience = make_audience(tenant.write)
    doc = {"name": "x"}
    stale = tenant.write.patch(
        f"/v1/audiences/{audience['id']}", json=doc, headers={**MERGE_PATCH, "If-Match": '"5"'}
    )
    assert stale.status_code == 412
    fresh = tenant.write.patch(
        f"/v1/audiences/{audience['id']}", json=doc, headers={**MERGE_PATCH, "If-Match": '"1"'}
    )
    assert fresh.status_code == 200


def test_patch_group_with_both_formats(tenant: Tenant) -> None:
    group = make_group(tenant.write, name="Before")
    url = f"/v1/audience-groups/{group['id']}"
    merged = tenant.write.patch(url, json={"description": "new"}, headers=MERGE_PATCH)
    assert merged.json()["description"] == "new"
    ops = [{"op": "replace", "path": "/name", "value": "After"}]
    patched = tenant.write.patch(url, json=ops, headers=JSON_PATCH)
    assert patched.json()["name"] == "After"
    assert patched.json()["version"] == 3
    forbidden = tenant.write.patch(
        url, json=[{"op": "replace", "path": "/audience_count", "value": 1}], headers=JSON_PATCH
    )
    assert forbidden.status_code == 422


@pytest.mark.parametrize(
    ("doc", "headers"),
    [
        ([{"op": "add", "path": "/metadata/n", "value": 2**64}], JSON_PATCH),
        ({"metadata": {"deep": [{"n": -(2**63) - 1}]}}, MERGE_PATCH),
    ],
)
def test_a_patch_with_a_number_json_cannot_store_is_422_and_changes_nothing(
    tenant: Tenant, doc: Any, headers: dict[str, str]
) -> None:
    audience = make_audience(tenant.write)
    response = _patch(tenant.write, audience, doc, headers)
    assert response.status_code == 422, response.text
    assert "64-bit" in response.text
    assert tenant.read.get(f"/v1/audiences/{audience['id']}").json() == audience


def test_a_patch_that_is_not_strict_json_is_malformed(tenant: Tenant) -> None:
    """NaN, infinity, lone surrogates, a byte order mark, bytes that are not UTF-8."""
    audience = make_audience(tenant.write)
    url = f"/v1/audiences/{audience['id']}"
    for body in (
        b'[{"op": "add", "path": "/metadata/n", "value": NaN}]',
        b'{"metadata": {"n": 1e400}}',
        b'{"metadata": {"s": "\\udfff"}}',
        b'{"metadata": {"s": "\xed\xa0\x80"}}',  # a surrogate encoded: not UTF-8
        b'\xef\xbb\xbf{"name": "x"}',
        b'{"name": "\xff"}',
    ):
        headers = JSON_PATCH if body.startswith(b"[") else MERGE_PATCH
        response = tenant.write.patch(url, content=body, headers=headers)
        assert (response.status_code, response.json()["code"]) == (400, "malformed_json"), body


def test_metadata_nested_deeper_than_a_json_column_takes_is_422(tenant: Tenant) -> None:
    audience = make_audience(tenant.write)
    deep: Any = 1
    for _ in range(300):
        deep = [deep]
    response = _patch(tenant.write, audience, {"metadata": {"deep": deep}}, MERGE_PATCH)
    assert (response.status_code, response.json()["code"]) == (422, "validation_failed")
    assert tenant.read.get(f"/v1/audiences/{audience['id']}").json() == audience


def _copies(source: str, count: int) -> list[dict[str, Any]]:
    return [{"op": "copy", "from": source, "path": f"/metadata/c{i}"} for i in range(count)]


def test_a_json_patch_that_copies_past_the_body_limit_is_413_and_changes_nothing(
    tenant: Tenant,
) -> None:
    """Issue #11: a small patch of ``copy`` operations once stored a resource far larger than
    any PUT body could carry."""
    audience = make_audience(tenant.write)
    ops = [
        {"op": "add", "path": "/metadata/big", "value": "x" * 100_000},
        *_copies("/metadata/big", 20),
    ]
    response = _patch(tenant.write, audience, ops, JSON_PATCH)
    assert response.status_code == 413, response.text[:200]
    assert response.json()["code"] == "patch_result_too_large"
    assert response.json()["limit_bytes"] == 1_048_576
    assert tenant.read.get(f"/v1/audiences/{audience['id']}").json() == audience


def test_copies_that_stay_under_the_body_limit_apply(tenant: Tenant) -> None:
    audience = make_audience(tenant.write)
    ops = [
        {"op": "add", "path": "/metadata/big", "value": "x" * 100_000},
        *_copies("/metadata/big", 5),
    ]
    response = _patch(tenant.write, audience, ops, JSON_PATCH)
    assert response.status_code == 200, response.text[:200]
    assert len(response.json()["metadata"]) == 6


def test_a_merge_patch_past_the_body_limit_is_413_and_changes_nothing(tenant: Tenant) -> None:
    audience = make_audience(tenant.write, metadata={"a": "x" * 600_000})
    response = _patch(tenant.write, audience, {"metadata": {"b": "y" * 600_000}}, MERGE_PATCH)
    assert (response.status_code, response.json()["code"]) == (413, "patch_result_too_large")
    assert tenant.read.get(f"/v1/audiences/{audience['id']}").json() == audience


def test_a_json_patch_with_too_many_operations_is_422(tenant: Tenant) -> None:
    """The issue's own patch: 231 KB copying a 100 KB value 2,000 times."""
    audience = make_audience(tenant.write)
    ops = [
        {"op": "add", "path": "/metadata/big", "value": "x" * 100_000},
        *_copies("/metadata/big", 2000),
    ]
    response = _patch(tenant.write, audience, ops, JSON_PATCH)
    assert (response.status_code, response.json()["code"]) == (422, "patch_too_many_operations")
    assert response.json()["limit"] == 100
    tests = [{"op": "test", "path": "/version", "value": 1}] * 100
    assert _patch(tenant.write, audience, tests, JSON_PATCH).status_code == 200
