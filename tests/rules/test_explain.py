"""Explain: each node's value on one profile, JSON-ready."""

from __future__ import annotations

import json

from audiences.rules import explain, validate_rule
from audiences.schemas.attributes import AttributeType as T
from tests.rules.helpers import NOW, SCHEMA


def test_explain_shows_why() -> None:
    rule = validate_rule(
        "country = 'US' AND (age >= 30 OR NOT churned) AND last_seen > now() - INTERVAL 7 DAY",
        SCHEMA,
    )
    profile = {"country": "US", "age": 25, "churned": None, "last_seen": NOW}
    result = explain(rule, profile, now=NOW)
    assert result["member"] is False and result["value"] is None
    assert result["text"] == rule.text
    tree = result["tree"]
    assert [(c["text"], c["value"]) for c in tree["children"]] == [
        ("country = 'US'", True),
        ("age >= 30 OR NOT churned", None),
        ("last_seen > now() - INTERVAL 7 DAY", True),
    ]
    either = tree["children"][1]["children"]
    assert [(c["text"], c["value"]) for c in either] == [
        ("age >= 30", False),
        ("NOT churned", None),
    ]
    assert either[0]["children"][0] == {"text": "age", "value": 25, "attribute": "age"}
    assert result["attributes"] == {
        "country": "US",
        "age": 25,
        "churned": None,
        "last_seen": "2024-05-31T12:00:00+00:00",
    }
    assert json.loads(json.dumps(result)) == result


def test_explain_member() -> None:
    rule = validate_rule("list_has_any(tags, ['vip']) AND in_audience('x')", SCHEMA)
    result = explain(rule, {"tags": ["vip"]}, audience=lambda key, profile: key == "x")
    assert result["member"] is True
    assert result["attributes"] == {"tags": ["vip"]}
    assert [c["value"] for c in result["tree"]["children"]] == [True, True]


def test_a_behavioural_node_shows_its_value_window_and_events() -> None:
    from datetime import timedelta

    from audiences.rules import EVENTS_KEY
    from audiences.schemas.events import Event, EventSchema

    rule = validate_rule(
        "count(*) FILTER (WHERE event = 'order' AND timestamp BETWEEN now() - INTERVAL 30 DAY"
        " AND now() - INTERVAL 1 DAY) >= 2",
        {},
        events=EventSchema({"amount": T.FLOAT}),
    )
    events = [Event("order", NOW - timedelta(days=d), {"amount": float(d)}) for d in range(40)]
    result = explain(rule, {EVENTS_KEY: events}, now=NOW)
    node = result["tree"]["children"][0]
    assert result["member"] is True
    assert node["behaviour"]["value"] == node["value"] == 30
    assert node["behaviour"]["total"] == 30
    assert node["behaviour"]["window"] == {
        "from": "2024-05-01T12:00:00+00:00",
        "from_included": True,
        "to": "2024-05-30T12:00:00+00:00",
        "to_included": True,
    }
    shown = node["behaviour"]["events"]
    assert [e["properties"]["amount"] for e in shown] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert "children" not in node
