"""The audiences of the membership benchmark and their hand-written references.

``BATCH`` holds 20 rules in our language beside the same predicates written by hand as DuckDB SQL
and as one Python function; ``STREAMING`` holds the 50 rules of the streaming audiences.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from bench.membership.data import COUNTRIES, TAGS

BATCH: dict[str, tuple[str, str]] = {
    # key: (our rule, the same predicate as hand-written DuckDB SQL)
    "b-us": ("country = 'US'", "country = 'US'"),
    "b-adults-30": ("age >= 30", "age >= 30"),
    "b-pro-or-team": ("plan IN ('pro', 'team')", "plan IN ('pro', 'team')"),
    "b-us-pro-30": (
        "country = 'US' AND age >= 30 AND plan IN ('pro', 'team')",
        "country = 'US' AND age >= 30 AND plan IN ('pro', 'team')",
    ),
    "b-active": ("NOT churned", "NOT churned"),
    "b-vip": ("list_contains(tags, 'vip')", "list_contains(tags, 'vip')"),
    "b-vip-active": (
        "list_contains(tags, 'vip') AND NOT churned",
        "list_contains(tags, 'vip') AND NOT churned",
    ),
    "b-high-value": ("lifetime_value > 1000", "lifetime_value > 1000"),
    "b-recent-30d": (
        "last_seen > TIMESTAMP '2024-12-02 00:00:00+00:00'",
        "last_seen > TIMESTAMPTZ '2024-12-02 00:00:00+00'",
    ),
    "b-dormant": (
        "last_seen < TIMESTAMP '2024-06-01 00:00:00+00:00'",
        "last_seen < TIMESTAMPTZ '2024-06-01 00:00:00+00'",
    ),
    "b-signed-2024": ("signup_date >= DATE '2024-01-01'", "signup_date >= DATE '2024-01-01'"),
    "b-eu": ("country IN ('DE', 'FR', 'ES', 'IT')", "country IN ('DE', 'FR', 'ES', 'IT')"),
    "b-eu-young": (
        "country IN ('DE', 'FR', 'ES', 'IT') AND age < 25",
        "country IN ('DE', 'FR', 'ES', 'IT') AND age < 25",
    ),
    "b-enterprise-us": (
        "plan = 'enterprise' AND country = 'US'",
        "plan = 'enterprise' AND country = 'US'",
    ),
    "b-no-age": ("age IS NULL", "age IS NULL"),
    "b-mobile-trial": (
        "list_contains(tags, 'mobile') AND list_contains(tags, 'trial')",
        "list_contains(tags, 'mobile') AND list_contains(tags, 'trial')",
    ),
    "b-value-band": ("lifetime_value BETWEEN 100 AND 500", "lifetime_value BETWEEN 100 AND 500"),
    "b-free-active": (
        "plan = 'free' AND NOT churned AND last_seen > TIMESTAMP '2024-12-01 00:00:00+00:00'",
        "plan = 'free' AND NOT churned AND last_seen > TIMESTAMPTZ '2024-12-01 00:00:00+00'",
    ),
    "b-seniors-or-partners": (
        "age >= 65 OR list_contains(tags, 'partner')",
        "age >= 65 OR list_contains(tags, 'partner')",
    ),
    "b-gb-ca-value": (
        "country IN ('GB', 'CA') AND lifetime_value > 200 AND NOT churned",
        "country IN ('GB', 'CA') AND lifetime_value > 200 AND NOT churned",
    ),
}

EVERYONE = ("b-everyone", "lifetime_value >= 0")
"""An audience holding every profile: the members page is read from it."""

RECENT_30D = datetime(2024, 12, 2, tzinfo=UTC)
DORMANT = datetime(2024, 6, 1, tzinfo=UTC)
FREE_SEEN = datetime(2024, 12, 1, tzinfo=UTC)
SIGNED = date(2024, 1, 1)


def hand_checks(p: dict[str, Any]) -> list[bool]:
    """The 20 batch predicates written by hand for one profile, NULLs as SQL treats them."""
    country, age, plan = p.get("country"), p.get("age"), p.get("plan")
    tags, value, seen = p.get("tags"), p.get("lifetime_value"), p.get("last_seen")
    churned, signup = p.get("churned"), p.get("signup_date")
    active = churned is False
    has_age = age is not None
    vip = tags is not None and "vip" in tags
    pro_team = plan == "pro" or plan == "team"
    eu = country in ("DE", "FR", "ES", "IT")
    return [
        country == "US",
        has_age and age >= 30,
        pro_team,
        country == "US" and has_age and age >= 30 and pro_team,
        active,
        vip,
        vip and active,
        value is not None and value > 1000,
        seen is not None and seen > RECENT_30D,
        seen is not None and seen < DORMANT,
        signup is not None and signup >= SIGNED,
        eu,
        eu and has_age and age < 25,
        plan == "enterprise" and country == "US",
        not has_age,
        tags is not None and "mobile" in tags and "trial" in tags,
        value is not None and 100 <= value <= 500,
        plan == "free" and active and seen is not None and seen > FREE_SEEN,
        (has_age and age >= 65) or (tags is not None and "partner" in tags),
        country in ("GB", "CA") and value is not None and value > 200 and active,
    ]


def streaming_rules() -> dict[str, str]:
    """50 streamable rules (attribute tests and ``in_audience`` of other streaming ones)."""
    rules: dict[str, str] = {}
    for country in dict.fromkeys(COUNTRIES):
        rules[f"s-country-{country.lower()}"] = f"country = '{country}'"
    for plan in ("free", "pro", "team", "enterprise"):
        rules[f"s-plan-{plan}-active"] = f"plan = '{plan}' AND NOT churned"
    for tag in TAGS:
        rules[f"s-tag-{tag}"] = f"list_contains(tags, '{tag}')"
    for low in range(20, 81, 10):
        rules[f"s-age-{low}s"] = f"age >= {low} AND age < {low + 10}"
    for value in (50, 100, 250, 500, 1000):
        rules[f"s-ltv-{value}"] = f"lifetime_value > {value}"
    for country in ("US", "DE", "FR", "GB", "BR"):
        rules[f"s-paying-{country.lower()}"] = f"country = '{country}' AND plan IN ('pro', 'team')"
    for first, second in (("vip", "beta"), ("mobile", "web"), ("trial", "partner"), ("vip", "web")):
        rules[f"s-{first}-or-{second}-25"] = (
            f"list_has_any(tags, ['{first}', '{second}']) AND age >= 25"
        )
    for year in (2020, 2021, 2022, 2023):
        rules[f"s-signed-{year}"] = f"signup_date >= DATE '{year}-01-01'"
    rules["s-seen-december"] = "last_seen > TIMESTAMP '2024-12-01 00:00:00+00:00'"
    rules["s-vip-active"] = "in_audience('s-tag-vip') AND NOT churned"
    rules["s-us-valuable"] = "in_audience('s-country-us') AND in_audience('s-ltv-500')"
    assert len(rules) == 50, len(rules)
    return rules
