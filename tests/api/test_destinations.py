"""``/v1/destinations``: the audience conventions (ETags, If-Match, lists, Idempotency-Key)
and every refusal of bad input with its code. No request leaves the process here: the
session's app keeps the SSRF guard on, and saving a URL resolves nothing."""

from __future__ import annotations

from typing import Any

import pytest

from tests.client import ApiClient
from tests.factories import Tenant, make_audience, make_group

PUBLIC = "https://hooks.example.com/audiences"


def body(**overrides: Any) -> dict[str, Any]:
    """A valid webhook destination body (subscribed to every audience)."""
    made: dict[str, Any] = {
        "name": "crm",
        "kind": "webhook",
        "url": PUBLIC,
        "subscription": {"all": True},
    }
    made.update(overrides)
    return made


def create(client: ApiClient, **overrides: Any) -> dict[str, Any]:
    """A destination made through the API."""
    answer = client.post("/v1/destinations", json=body(**overrides))
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def test_create_shows_the_secret_once_with_location_and_etag(tenant: Tenant) -> None:
    """201 with ``Location``, ``ETag`` and a fresh ``whsec_`` secret; reads never show it."""
    answer = tenant.write.post("/v1/destinations", json=body())
    assert answer.status_code == 201, answer.text
    made = answer.json()
    assert made["secret"].startswith("whsec_") and made["version"] == 1
    assert answer.headers["Location"] == f"/v1/destinations/{made['id']}"
    assert answer.headers["ETag"] == '"1"'
    read = tenant.read.get(f"/v1/destinations/{made['id']}")
    assert read.status_code == 200 and read.json()["secret"] is None
    assert read.json()["backlog"] == 0 and read.json()["last_delivery_at"] is None


def test_idempotency_key_replays_the_creation(tenant: Tenant) -> None:
    """The same key and body answer the first response again; another body is 422."""
    headers = {"Idempotency-Key": "dest-1"}
    first = tenant.admin.post("/v1/destinations", json=body(), headers=headers)
    again = tenant.admin.post("/v1/destinations", json=body(), headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    other = tenant.admin.post("/v1/destinations", json=body(name="other"), headers=headers)
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"


def test_list_pages_filters_and_sorts(tenant: Tenant) -> None:
    """Cursor paging with ``Link``, filters by kind and enabled, ``q``, ``sort``, ``fields``."""
    for name in ("a-hook", "b-hook", "c-hook"):
        create(tenant.admin, name=name, enabled=name != "b-hook")
    first = tenant.read.get("/v1/destinations", params={"limit": 2, "sort": "name"})
    assert [d["name"] for d in first.json()["data"]] == ["a-hook", "b-hook"]
    assert first.json()["total"] == 3 and 'rel="next"' in first.headers["Link"]
    rest = tenant.read.get(
        "/v1/destinations",
        params={"limit": 2, "sort": "name", "cursor": first.json()["next_cursor"]},
    )
    assert [d["name"] for d in rest.json()["data"]] == ["c-hook"]
    off = tenant.read.get("/v1/destinations", params={"enabled": "false", "fields": "name"})
    assert off.json()["data"] == [{"id": off.json()["data"][0]["id"], "name": "b-hook"}]
    assert tenant.read.get("/v1/destinations", params={"kind": "file"}).json()["total"] == 0
    assert tenant.read.get("/v1/destinations", params={"q": "C-HO"}).json()["total"] == 1
    bad = tenant.read.get("/v1/destinations", params={"sort": "url"})
    assert bad.status_code in (400, 422)


def test_replace_patch_and_delete_honour_if_match(tenant: Tenant) -> None:
    """PUT and PATCH move the version; a stale ``If-Match`` is 412; DELETE is 204, then 404."""
    made = create(tenant.admin)
    path = f"/v1/destinations/{made['id']}"
    replaced = tenant.admin.put(
        path, json=body(name="renamed", attributes=["country"]), headers={"If-Match": '"1"'}
    )
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["version"] == 2 and replaced.headers["ETag"] == '"2"'
    assert replaced.json()["attributes"] == ["country"]
    stale = tenant.admin.put(path, json=body(name="again"), headers={"If-Match": '"1"'})
    assert stale.status_code == 412 and stale.json()["code"] == "version_mismatch"
    patched = tenant.admin.patch(
        path,
        content=b'{"description": "the CRM"}',
        headers={"Content-Type": "application/merge-patch+json", "If-Match": '"2"'},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["description"] == "the CRM" and patched.json()["name"] == "renamed"
    assert tenant.admin.delete(path, headers={"If-Match": '"3"'}).status_code == 204
    gone = tenant.admin.get(path)
    assert gone.status_code == 404 and gone.json()["code"] == "destination_not_found"


def test_subscriptions_to_audiences_a_group_or_all(tenant: Tenant) -> None:
    """Each form is kept as given; a name is unique in the workspace."""
    audience = make_audience(tenant.admin)
    group = make_group(tenant.admin)
    listed = create(tenant.admin, name="one", subscription={"audience_ids": [audience["id"]]})
    grouped = create(tenant.admin, name="two", subscription={"group_id": group["id"]})
    assert listed["subscription"] == {"audience_ids": [audience["id"]]}
    assert grouped["subscription"] == {"group_id": group["id"]}
    assert create(tenant.admin, name="three")["subscription"] == {"all": True}
    taken = tenant.admin.post("/v1/destinations", json=body(name="one"))
    assert taken.status_code == 409 and taken.json()["code"] == "duplicate_name"


def test_an_audience_or_attribute_named_twice_counts_once(tenant: Tenant) -> None:
    """Repeated ids and attributes are kept once, in the order first given, also when a JSON
    Patch appends one already there."""
    first, second = make_audience(tenant.admin), make_audience(tenant.admin)
    tenant.admin.put("/v1/attributes/country", json={"type": "string"})
    twice = [first["id"], second["id"], first["id"]]
    made = create(
        tenant.admin, subscription={"audience_ids": twice}, attributes=["country", "country"]
    )
    assert made["subscription"] == {"audience_ids": [first["id"], second["id"]]}
    assert made["attributes"] == ["country"]
    appended = tenant.admin.patch(
        f"/v1/destinations/{made['id']}",
        json=[{"op": "add", "path": "/subscription/audience_ids/-", "value": second["id"]}],
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert appended.status_code == 200, appended.text
    assert appended.json()["subscription"] == {"audience_ids": [first["id"], second["id"]]}


def test_another_workspace_sees_nothing(tenant: Tenant, other_tenant: Tenant) -> None:
    """Another workspace's destination answers 404, and reads lists none."""
    made = create(tenant.admin)
    assert other_tenant.admin.get(f"/v1/destinations/{made['id']}").status_code == 404
    assert other_tenant.admin.post(f"/v1/destinations/{made['id']}/test").status_code == 404
    assert other_tenant.read.get("/v1/destinations").json()["total"] == 0


def test_reading_keys_cannot_write(tenant: Tenant) -> None:
    """A read key gets 403 on create and on every action."""
    assert tenant.read.post("/v1/destinations", json=body()).status_code == 403
    made = create(tenant.admin)
    for action in ("rotate-secret", "reset", "test"):
        refused = tenant.read.post(f"/v1/destinations/{made['id']}/{action}")
        assert refused.status_code == 403, action


@pytest.mark.parametrize(
    ("overrides", "status", "code"),
    [
        ({"url": "ftp://hooks.example.com/x"}, 400, "url_not_allowed"),
        ({"url": "http://127.0.0.1:9/x"}, 400, "url_not_allowed"),
        ({"url": "http://10.1.2.3/x"}, 400, "url_not_allowed"),
        ({"url": "http://169.254.169.254/latest"}, 400, "url_not_allowed"),
        ({"url": "https://user:pw@hooks.example.com/"}, 400, "url_not_allowed"),
        ({"url": f"https://{'h' * 64}.example.com/"}, 400, "url_not_allowed"),
        ({"url": "https://bad..example.com/"}, 400, "url_not_allowed"),
        ({"url": "https://exa mple.com/"}, 400, "url_not_allowed"),
        ({"url": "http://%31%32%37.0.0.1/"}, 400, "url_not_allowed"),
        ({"subscription": {"audience_ids": ["nope"]}}, 422, "unknown_audience"),
        ({"subscription": {"group_id": "nope"}}, 422, "unknown_group"),
        ({"subscription": {"all": True, "group_id": "g"}}, 422, "validation_failed"),
        ({"subscription": {}}, 422, "validation_failed"),
        ({"secret": "not-a-secret"}, 422, "secret_invalid"),
        ({"secret": "whsec_c2hvcnQ="}, 422, "secret_invalid"),
        ({"secret": "whsec_!!!notbase64!!!"}, 422, "secret_invalid"),
        ({"attributes": ["no_such_attribute"]}, 422, "unknown_attribute"),
        ({"subscription": {"all": False}}, 422, "validation_failed"),
        ({"url": None}, 422, "destination_fields_mismatch"),
        ({"path": "exports"}, 422, "destination_fields_mismatch"),
        ({"kind": "file", "path": None, "url": None}, 422, "destination_fields_mismatch"),
        ({"kind": "file", "url": None, "path": "exports"}, 422, "file_destinations_disabled"),
        ({"kind": "s3"}, 422, "validation_failed"),
    ],
)
def test_bad_input_is_refused_with_its_code(
    tenant: Tenant, overrides: dict[str, Any], status: int, code: str
) -> None:
    """Each bad destination is refused with a stable code, and nothing is created."""
    answer = tenant.admin.post("/v1/destinations", json=body(**overrides))
    assert answer.status_code == status, answer.text
    assert answer.json()["code"] == code
    assert tenant.read.get("/v1/destinations").json()["total"] == 0


def test_a_host_name_that_cannot_be_sent_to_is_refused_on_every_write(tenant: Tenant) -> None:
    """A label over 63 characters (or one too long once IDNA encoded) is refused by PUT and
    PATCH as by POST, and the destination keeps its URL."""
    made = create(tenant.admin)
    path = f"/v1/destinations/{made['id']}"
    for url in (f"https://{'h' * 64}.example.com/", f"https://{'a' * 56}ü.example.com/"):
        replaced = tenant.admin.put(path, json=body(url=url))
        assert (replaced.status_code, replaced.json()["code"]) == (400, "url_not_allowed")
        patched = tenant.admin.patch(
            path,
            content=f'{{"url": "{url}"}}'.encode(),
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert (patched.status_code, patched.json()["code"]) == (400, "url_not_allowed")
    assert tenant.read.get(path).json()["url"] == PUBLIC


def test_kind_never_changes_and_unknown_deliveries_are_404(tenant: Tenant) -> None:
    """A PUT to another kind is 422; an unknown delivery is 404; the log starts empty."""
    made = create(tenant.admin)
    path = f"/v1/destinations/{made['id']}"
    changed = tenant.admin.put(path, json=body(kind="file", url=None, path="x"))
    assert changed.status_code == 422 and changed.json()["code"] == "destination_kind_fixed"
    kept = tenant.admin.put(path, json={**body(), "kind": "webhook", "url": PUBLIC + "/v2"})
    assert kept.status_code == 200 and kept.json()["url"] == PUBLIC + "/v2"
    missing = tenant.read.get(f"{path}/deliveries/msg_nope")
    assert missing.status_code == 404 and missing.json()["code"] == "delivery_not_found"
    assert tenant.read.get(f"{path}/deliveries").json() == {
        "data": [],
        "has_more": False,
        "next_cursor": None,
        "total": 0,
    }


@pytest.mark.parametrize("since", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-05:00"])
def test_a_redelivery_since_a_time_outside_the_calendar_is_refused(
    tenant: Tenant, since: str
) -> None:
    """A time that is before the year 1 or after 9999 once in UTC is a 422, not a 500."""
    made = create(tenant.admin)
    answer = tenant.admin.post(f"/v1/destinations/{made['id']}/redeliver", json={"since": since})
    assert answer.status_code == 422, answer.text
    assert answer.json()["code"] == "validation_failed"


@pytest.mark.parametrize("follows", ["audience", "group"])
def test_a_destination_stays_writable_after_what_it_follows_is_deleted(
    tenant: Tenant, follows: str
) -> None:
    """The deleted audience (or group) stays named and follows nothing; the destination can
    still be renamed and turned off and on, but a new unknown reference is still refused."""
    audience = make_audience(tenant.admin)
    group = make_group(tenant.admin)
    if follows == "audience":
        subscription: dict[str, Any] = {"audience_ids": [audience["id"]]}
        gone = f"/v1/audiences/{audience['id']}"
    else:
        subscription = {"group_id": group["id"]}
        gone = f"/v1/audience-groups/{group['id']}"
    made = create(tenant.admin, subscription=subscription)
    assert tenant.admin.delete(gone).status_code == 204
    path = f"/v1/destinations/{made['id']}"
    merge = {"Content-Type": "application/merge-patch+json"}
    for change in ('{"name": "renamed"}', '{"enabled": false}', '{"enabled": true}'):
        answer = tenant.admin.patch(path, content=change.encode(), headers=merge)
        assert answer.status_code == 200, answer.text
    shown = tenant.read.get(path).json()
    assert (shown["name"], shown["enabled"], shown["subscription"]) == (
        "renamed",
        True,
        subscription,
    )
    other = {"audience_ids": [audience["id"], "nope"]} if follows == "audience" else None
    other = other or {"group_id": "nope"}
    refused = tenant.admin.put(path, json=body(name="renamed", subscription=other))
    assert refused.status_code == 422
    assert refused.json()["code"] == f"unknown_{follows}"
