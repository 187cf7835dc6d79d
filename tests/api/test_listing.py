"""The list conventions, on the audience list (the group and key lists share the same code)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.client import ApiClient
from tests.factories import Tenant, make_audience, make_group


def _all_pages(client: ApiClient, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        response = client.get(
            "/v1/audiences", params={**params, **({"cursor": cursor} if cursor else {})}
        )
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["data"]
        assert page["has_more"] == (page["next_cursor"] is not None)
        if not page["has_more"]:
            assert "link" not in response.headers
            return items
        assert 'rel="next"' in response.headers["link"]
        cursor = page["next_cursor"]


@pytest.fixture
def populated(tenant: Tenant) -> list[dict[str, Any]]:
    group = make_group(tenant.write, name="G")
    names = ["delta", "Alpha", "charlie", "bravo", "alpha", "echo", "delta"]
    return [
        make_audience(
            tenant.write,
            name=name,
            kind="static" if i % 2 else "dynamic",
            labels=["even"] if i % 2 == 0 else ["odd"],
            group_id=group["id"] if i < 3 else None,
            lifecycle_state="published" if i < 4 else "draft",
            archived=i == 6,
            description="Needle in here" if i == 5 else None,
        )
        for i, name in enumerate(names)
    ]


def test_default_page_is_creation_order_with_total(
    tenant: Tenant, populated: list[dict[str, Any]]
) -> None:
    page = tenant.read.get("/v1/audiences").json()
    assert [a["id"] for a in page["data"]] == [a["id"] for a in populated]
    assert page["total"] == 7
    assert page["has_more"] is False
    assert page["next_cursor"] is None


@pytest.mark.parametrize(
    "sort",
    ["name", "-name", "key", "-key", "created_at", "-created_at", "updated_at", "-updated_at"],
)
def test_cursor_pages_cover_everything_once_in_sort_order(
    tenant: Tenant, populated: list[dict[str, Any]], sort: str
) -> None:
    items = _all_pages(tenant.read, sort=sort, limit=2)
    field = sort.removeprefix("-")
    expected = sorted(populated, key=lambda a: (a[field], a["id"]), reverse=sort.startswith("-"))
    assert [a["id"] for a in items] == [a["id"] for a in expected]


def test_offset_paging(tenant: Tenant, populated: list[dict[str, Any]]) -> None:
    page = tenant.read.get("/v1/audiences", params={"offset": 5, "limit": 10}).json()
    assert [a["id"] for a in page["data"]] == [a["id"] for a in populated[5:]]
    assert page["total"] == 7
    first = tenant.read.get("/v1/audiences", params={"offset": 1, "limit": 2}).json()
    assert [a["id"] for a in first["data"]] == [a["id"] for a in populated[1:3]]
    rest = tenant.read.get(
        "/v1/audiences", params={"cursor": first["next_cursor"], "limit": 10}
    ).json()
    assert [a["id"] for a in rest["data"]] == [a["id"] for a in populated[3:]]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"kind": "static"}, [1, 3, 5]),
        ({"lifecycle_state": "draft"}, [4, 5, 6]),
        ({"archived": "true"}, [6]),
        ({"archived": "false"}, [0, 1, 2, 3, 4, 5]),
        ({"label": "odd"}, [1, 3, 5]),
        ({"group": "none"}, [3, 4, 5, 6]),
        ({"q": "ALPHA"}, [1, 4]),
        ({"q": "needle"}, [5]),
        ({"q": "%"}, []),
        ({"kind": "dynamic", "label": "even", "archived": "false"}, [0, 2, 4]),
    ],
)
def test_filters_and_search(
    tenant: Tenant, populated: list[dict[str, Any]], params: dict[str, str], expected: list[int]
) -> None:
    page = tenant.read.get("/v1/audiences", params=params).json()
    assert [a["id"] for a in page["data"]] == [populated[i]["id"] for i in expected]
    assert page["total"] == len(expected)


def test_group_and_key_filters(tenant: Tenant, populated: list[dict[str, Any]]) -> None:
    group_id = populated[0]["group_id"]
    in_group = tenant.read.get("/v1/audiences", params={"group": group_id}).json()["data"]
    assert [a["id"] for a in in_group] == [a["id"] for a in populated[:3]]
    by_key = tenant.read.get("/v1/audiences", params={"key": populated[4]["key"]}).json()["data"]
    assert [a["id"] for a in by_key] == [populated[4]["id"]]


def test_updated_since(tenant: Tenant, populated: list[dict[str, Any]]) -> None:
    later = datetime.now(UTC) + timedelta(seconds=1)
    assert (
        tenant.read.get("/v1/audiences", params={"updated_since": later.isoformat()}).json()[
            "total"
        ]
        == 0
    )
    cut = populated[3]["updated_at"]
    page = tenant.read.get("/v1/audiences", params={"updated_since": cut}).json()
    assert [a["id"] for a in page["data"]] == [a["id"] for a in populated[3:]]


def test_sparse_fields_and_include(tenant: Tenant, populated: list[dict[str, Any]]) -> None:
    page = tenant.read.get("/v1/audiences", params={"fields": "name,kind", "limit": 1}).json()
    assert page["data"] == [{"id": populated[0]["id"], "name": "delta", "kind": "dynamic"}]
    page = tenant.read.get("/v1/audiences", params={"include": "group", "limit": 4}).json()
    assert page["data"][0]["group"] == {"id": populated[0]["group_id"], "name": "G"}
    assert page["data"][3]["group"] is None


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"limit": 201}, 422, "limit_out_of_range"),
        ({"limit": 0}, 422, "validation_failed"),
        ({"limit": "ten"}, 422, "validation_failed"),
        ({"offset": -1}, 422, "validation_failed"),
        ({"cursor": "not-a-cursor"}, 400, "invalid_cursor"),
        ({"cursor": "eyJzIjoibmFtZSJ9"}, 400, "invalid_cursor"),
        ({"sort": "rule"}, 400, "unknown_sort_field"),
        ({"sort": "--name"}, 400, "unknown_sort_field"),
        ({"fields": "name,secret"}, 400, "unknown_fields"),
        ({"include": "owner"}, 400, "unknown_include"),
        ({"colour": "red"}, 400, "unknown_filter"),
        ({"kind": "quantum"}, 422, "validation_failed"),
        ({"archived": "maybe"}, 422, "validation_failed"),
        ({"updated_since": "yesterday"}, 422, "validation_failed"),
        # Times whose instant falls outside the years 1-9999 in UTC (stored times are UTC).
        ({"updated_since": "0001-01-01T00:00:00+14:00"}, 422, "validation_failed"),
        ({"updated_since": "9999-12-31T23:59:59-05:00"}, 422, "validation_failed"),
    ],
)
def test_bad_list_parameters(
    tenant: Tenant, params: dict[str, Any], status: int, code: str
) -> None:
    response = tenant.read.get("/v1/audiences", params=params)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code


def test_unknown_parameter_is_named(tenant: Tenant) -> None:
    problem = tenant.read.get("/v1/audiences", params={"colour": "red"}).json()
    assert "colour" in problem["detail"]


def test_cursor_is_bound_to_its_sort(tenant: Tenant, populated: list[dict[str, Any]]) -> None:
    cursor = tenant.read.get("/v1/audiences", params={"sort": "name", "limit": 1}).json()[
        "next_cursor"
    ]
    assert (
        tenant.read.get("/v1/audiences", params={"sort": "name", "cursor": cursor}).status_code
        == 200
    )
    wrong = tenant.read.get("/v1/audiences", params={"sort": "-name", "cursor": cursor})
    assert wrong.status_code == 400
    assert wrong.json()["code"] == "invalid_cursor"
    both = tenant.read.get("/v1/audiences", params={"cursor": cursor, "offset": 1, "sort": "name"})
    assert both.status_code == 400


def test_link_header_points_at_the_next_page(
    tenant: Tenant, populated: list[dict[str, Any]]
) -> None:
    response = tenant.read.get("/v1/audiences", params={"limit": 2, "kind": "static"})
    match = re.match(r"<([^>]+)>; rel=\"next\"", response.headers["link"])
    assert match is not None
    follow = tenant.read.get(match.group(1)).json()
    assert [a["kind"] for a in follow["data"]] == ["static"]


def test_group_and_key_lists_follow_the_conventions(tenant: Tenant) -> None:
    for name in ["b", "a", "c"]:
        make_group(tenant.write, name=name)
    groups = tenant.read.get("/v1/audience-groups", params={"sort": "-name", "limit": 2}).json()
    assert [g["name"] for g in groups["data"]] == ["c", "b"]
    assert groups["total"] == 3
    assert tenant.read.get("/v1/audience-groups", params={"name": "a"}).json()["total"] == 1
    assert tenant.read.get("/v1/audience-groups", params={"bogus": 1}).status_code == 400
    keys = tenant.admin.get("/v1/api-keys", params={"role": "read"}).json()
    assert [k["role"] for k in keys["data"]] == ["read"]


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    names=st.lists(st.sampled_from(["a", "b", "B", "c", "ä", "a b"]), min_size=0, max_size=9),
    limit=st.integers(min_value=1, max_value=4),
    sort=st.sampled_from(["name", "-name", "key", "-created_at"]),
)
def test_paging_property_every_item_once_in_order(
    tenant: Tenant, names: list[str], limit: int, sort: str
) -> None:
    for audience in tenant.read.get("/v1/audiences", params={"limit": 200}).json()["data"]:
        tenant.write.delete(f"/v1/audiences/{audience['id']}")
    created = [make_audience(tenant.write, name=name) for name in names]
    field = sort.removeprefix("-")
    expected = sorted(created, key=lambda a: (a[field], a["id"]), reverse=sort.startswith("-"))
    paged = _all_pages(tenant.read, sort=sort, limit=limit)
    assert [a["id"] for a in paged] == [a["id"] for a in expected]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ([("kind", "static"), ("kind", "dynamic")], [0, 1, 2, 3, 4, 5, 6]),
        ({"kind": "static,external"}, [1, 3, 5]),
        ([("label", "odd"), ("archived", "true")], []),
        ({"lifecycle_state": "draft,published", "archived": "true,false"}, list(range(7))),
        ([("group", "none"), ("kind", "static,dynamic")], [3, 4, 5, 6]),
    ],
)
def test_a_filter_takes_several_values_meaning_any(
    tenant: Tenant, populated: list[dict[str, Any]], params: Any, expected: list[int]
) -> None:
    page = tenant.read.get("/v1/audiences", params=params).json()
    assert [a["id"] for a in page["data"]] == [populated[i]["id"] for i in expected]


def test_repeated_and_comma_values_name_several_keys_and_groups(
    tenant: Tenant, populated: list[dict[str, Any]]
) -> None:
    keys = [populated[1]["key"], populated[4]["key"]]
    repeated = tenant.read.get("/v1/audiences", params=[("key", k) for k in keys]).json()
    assert [a["id"] for a in repeated["data"]] == [populated[1]["id"], populated[4]["id"]]
    commas = tenant.read.get("/v1/audiences", params={"key": ",".join(keys)}).json()
    assert commas["data"] == repeated["data"]
    group = populated[0]["group_id"]
    both = tenant.read.get("/v1/audiences", params={"group": f"none,{group}"}).json()
    assert both["total"] == 7


def test_a_bad_value_among_several_is_refused(tenant: Tenant) -> None:
    response = tenant.read.get("/v1/audiences", params={"kind": "static,quantum"})
    assert response.status_code == 422
    assert response.json()["code"] == "validation_failed"
    too_many = tenant.read.get("/v1/audiences", params={"key": ",".join(["k"] * 101)})
    assert too_many.status_code == 422


def _ids(client: ApiClient, path: str, **params: Any) -> list[str]:
    response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["data"]]


def test_every_list_filters_by_several_ids_and_sorts_by_id(tenant: Tenant) -> None:
    audiences = [make_audience(tenant.write) for _ in range(3)]  # each queues a job
    for name in ["x", "y", "z"]:
        make_group(tenant.write, name=name)
    for _ in range(3):
        refreshed = tenant.write.post(f"/v1/audiences/{audiences[0]['id']}/refresh")
        assert refreshed.status_code == 202, refreshed.text
    runs_path = f"/v1/audiences/{audiences[0]['id']}/runs"
    lists = ["/v1/audiences", "/v1/audience-groups", "/v1/jobs", "/v1/api-keys", runs_path]
    for path in lists:
        every = _ids(tenant.admin, path, limit=200)
        assert len(every) >= 2, path
        assert _ids(tenant.admin, path, sort="id", limit=200) == sorted(every), path
        assert _ids(tenant.admin, path, sort="-id", limit=200) == sorted(every, reverse=True)
        wanted = sorted(every)[:2]
        assert _ids(tenant.admin, path, id=",".join(wanted), sort="id") == wanted, path
        repeated = tenant.admin.get(path, params=[("id", i) for i in wanted] + [("sort", "id")])
        assert [item["id"] for item in repeated.json()["data"]] == wanted, path
        paged = _ids(tenant.admin, path, sort="id", limit=1)
        assert paged == sorted(every)[:1], path


def test_groups_filter_by_several_names_and_by_description(tenant: Tenant) -> None:
    a = make_group(tenant.write, name="a, with a comma", description="north")
    b = make_group(tenant.write, name="b", description="south")
    make_group(tenant.write, name="c", description="north and south")
    names = [("name", a["name"]), ("name", "b")]
    assert _ids(tenant.read, "/v1/audience-groups") != []
    by_names = tenant.read.get("/v1/audience-groups", params=names).json()["data"]
    assert [g["id"] for g in by_names] == [a["id"], b["id"]]
    by_description = tenant.read.get(
        "/v1/audience-groups", params=[("description", "north"), ("description", "south")]
    ).json()["data"]
    assert [g["id"] for g in by_description] == [a["id"], b["id"]]


@pytest.mark.parametrize(
    "value", ["0.5", "1700000000", "2024-05-01", "2024-05-01T12:00:00", "yesterday"]
)
def test_updated_since_takes_rfc3339_only(tenant: Tenant, value: str) -> None:
    response = tenant.read.get("/v1/audiences", params={"updated_since": value})
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["location"] == ["query", "updated_since"]


def test_updated_since_takes_any_offset(tenant: Tenant, populated: list[dict[str, Any]]) -> None:
    for value in ["2000-01-01T00:00:00Z", "2000-01-01T02:00:00.5+02:00"]:
        page = tenant.read.get("/v1/audiences", params={"updated_since": value}).json()
        assert page["total"] == 7
