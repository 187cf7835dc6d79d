"""Rule warnings over HTTP: an event name no event has had yet (``rule_unknown_event``) leaves
a rule valid and is shown in ``warnings`` on audiences (create, get, list, replace, patch) and
previews, located at ``rule`` with positions in the answer's canonical rule (issue #13)."""

from __future__ import annotations

from typing import Any

import orjson

from tests.client import ApiClient
from tests.factories import Tenant, audience_body, make_audience

TYPO = "count(*) FILTER (WHERE event = 'ordr' AND timestamp > now() - INTERVAL 1 HOUR) >= 3"
KNOWN = "count(*) FILTER (WHERE event = 'order') >= 1"


def _send(client: ApiClient, name: str) -> None:
    answer = client.post("/v1/events", json={"profile_id": "p1", "event": name})
    assert answer.status_code == 201, answer.text


def _unknown_ordr(body: dict[str, Any]) -> None:
    """``body`` carries exactly one warning: 'ordr' is unknown, 'order' suggested, located in
    its own ``rule`` text."""
    (warning,) = body["warnings"]
    assert warning["code"] == "rule_unknown_event"
    assert warning["location"] == ["rule"]
    assert warning["suggestion"] == "order"
    assert body["rule"][warning["start"] : warning["end"]] == "'ordr'"
    assert warning["line"] == 1 and warning["col"] == warning["start"] + 1


def test_create_get_and_list_show_the_warning_until_the_event_arrives(tenant: Tenant) -> None:
    _send(tenant.write, "order")
    created = make_audience(tenant.admin, rule=TYPO)
    _unknown_ordr(created)
    got = tenant.read.get(f"/v1/audiences/{created['id']}")
    _unknown_ordr(got.json())
    listed = tenant.read.get("/v1/audiences").json()["data"]
    _unknown_ordr(next(a for a in listed if a["id"] == created["id"]))
    _send(tenant.write, "ordr")
    assert tenant.read.get(f"/v1/audiences/{created['id']}").json()["warnings"] == []


def test_replace_and_patch_answer_with_the_warnings_of_the_new_rule(tenant: Tenant) -> None:
    _send(tenant.write, "order")
    created = make_audience(tenant.admin, rule=KNOWN)
    assert created["warnings"] == []
    path = f"/v1/audiences/{created['id']}"
    replaced = tenant.admin.put(path, json=audience_body(key=created["key"], rule=TYPO))
    assert replaced.status_code == 200, replaced.text
    _unknown_ordr(replaced.json())
    patch = [{"op": "replace", "path": "/rule", "value": KNOWN}]
    patched = tenant.admin.patch(
        path, content=_json(patch), headers={"Content-Type": "application/json-patch+json"}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["warnings"] == []
    merge = {"Content-Type": "application/merge-patch+json"}
    merged = tenant.admin.patch(path, content=_json({"rule": TYPO}), headers=merge)
    assert merged.status_code == 200, merged.text
    _unknown_ordr(merged.json())


def test_previews_show_the_warnings(tenant: Tenant) -> None:
    _send(tenant.write, "order")
    preview = tenant.read.post("/v1/audiences/preview", json={"rule": TYPO})
    assert preview.status_code == 200, preview.text
    _unknown_ordr(preview.json())
    audience = make_audience(tenant.admin, rule=KNOWN)
    proposed = tenant.read.post(f"/v1/audiences/{audience['id']}/preview", json={"rule": TYPO})
    assert proposed.status_code == 200, proposed.text
    _unknown_ordr(proposed.json())
    clean = tenant.read.post("/v1/audiences/preview", json={"rule": KNOWN})
    assert clean.json()["warnings"] == []


def test_a_json_form_rule_is_located_in_its_canonical_text(tenant: Tenant) -> None:
    _send(tenant.write, "order")
    rule = {
        "all": [
            {"field": "age", "op": "gte", "value": 30},
            {"events": {"aggregate": "count", "name": ["ordr", "order"]}, "op": "gte", "value": 1},
        ]
    }
    preview = tenant.read.post("/v1/audiences/preview", json={"rule": rule})
    assert preview.status_code == 200, preview.text
    _unknown_ordr(preview.json())


def test_warnings_never_hide_errors(tenant: Tenant) -> None:
    rule = "count(*) FILTER (WHERE event = 'ordr' AND colour = 'red') >= 1"
    answer = tenant.admin.post("/v1/audiences", json=audience_body(rule=rule))
    assert answer.status_code == 422, answer.text
    assert [e["code"] for e in answer.json()["errors"]] == ["rule_unknown_property"]


def test_attribute_rules_have_no_warnings(tenant: Tenant) -> None:
    created = make_audience(tenant.admin, rule="age > 30")
    assert created["warnings"] == []


def _json(value: Any) -> bytes:
    return orjson.dumps(value)
