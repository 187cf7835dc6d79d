"""The 20 audiences of the engine benchmark: each as a rule (what a user saves, compiled by the
service for each engine) and as the condition a person would write by hand in each engine's SQL.

The hand-written conditions fix "now" at the benchmark's ``NOW`` (2025-01-01 UTC), as the rules
are compiled with it; both must select the same profiles on every engine.
"""

from __future__ import annotations

RULES: dict[str, str] = {
    "us": "country = 'US'",
    "adults_30": "age >= 30",
    "pro_or_team": "plan IN ('pro', 'team')",
    "us_pro_30": "country = 'US' AND age >= 30 AND plan IN ('pro', 'team')",
    "active": "NOT churned",
    "vip": "list_contains(tags, 'vip')",
    "vip_not_churned": "list_contains(tags, 'vip') AND NOT churned",
    "high_value": "lifetime_value > 1000",
    "recent_30d": "last_seen > now() - INTERVAL 30 DAY",
    "dormant": "last_seen < TIMESTAMP '2024-06-01 00:00:00+00:00'",
    "signed_2024": "signup_date >= DATE '2024-01-01'",
    "eu": "country IN ('DE', 'FR', 'ES', 'IT')",
    "eu_young": "country IN ('DE', 'FR', 'ES', 'IT') AND age < 25",
    "enterprise_us": "plan = 'enterprise' AND country = 'US'",
    "no_age": "age IS NULL",
    "mobile_trial": "list_contains(tags, 'mobile') AND list_contains(tags, 'trial')",
    "value_band": "lifetime_value BETWEEN 100 AND 500",
    "free_active": (
        "plan = 'free' AND NOT churned AND last_seen > TIMESTAMP '2024-12-01 00:00:00+00:00'"
    ),
    "seniors_or_partners": "age >= 65 OR list_contains(tags, 'partner')",
    "gb_ca_value": "country IN ('GB', 'CA') AND lifetime_value > 200 AND NOT churned",
}

DUCKDB: dict[str, str] = {
    "us": "country = 'US'",
    "adults_30": "age >= 30",
    "pro_or_team": "plan IN ('pro', 'team')",
    "us_pro_30": "country = 'US' AND age >= 30 AND plan IN ('pro', 'team')",
    "active": "NOT churned",
    "vip": "list_contains(tags, 'vip')",
    "vip_not_churned": "list_contains(tags, 'vip') AND NOT churned",
    "high_value": "lifetime_value > 1000",
    "recent_30d": "last_seen > TIMESTAMPTZ '2025-01-01 00:00:00+00' - INTERVAL 30 DAY",
    "dormant": "last_seen < TIMESTAMPTZ '2024-06-01 00:00:00+00'",
    "signed_2024": "signup_date >= DATE '2024-01-01'",
    "eu": "country IN ('DE', 'FR', 'ES', 'IT')",
    "eu_young": "country IN ('DE', 'FR', 'ES', 'IT') AND age < 25",
    "enterprise_us": "plan = 'enterprise' AND country = 'US'",
    "no_age": "age IS NULL",
    "mobile_trial": "list_contains(tags, 'mobile') AND list_contains(tags, 'trial')",
    "value_band": "lifetime_value BETWEEN 100 AND 500",
    "free_active": "plan = 'free' AND NOT churned AND last_seen > TIMESTAMPTZ '2024-12-01'",
    "seniors_or_partners": "age >= 65 OR list_contains(tags, 'partner')",
    "gb_ca_value": "country IN ('GB', 'CA') AND lifetime_value > 200 AND NOT churned",
}

POSTGRES: dict[str, str] = {
    "us": "country = 'US'",
    "adults_30": "age >= 30",
    "pro_or_team": "plan IN ('pro', 'team')",
    "us_pro_30": "country = 'US' AND age >= 30 AND plan IN ('pro', 'team')",
    "active": "NOT churned",
    "vip": "'vip' = ANY(tags)",
    "vip_not_churned": "'vip' = ANY(tags) AND NOT churned",
    "high_value": "lifetime_value > 1000",
    "recent_30d": "last_seen > TIMESTAMPTZ '2025-01-01 00:00:00+00' - INTERVAL '30 days'",
    "dormant": "last_seen < TIMESTAMPTZ '2024-06-01 00:00:00+00'",
    "signed_2024": "signup_date >= DATE '2024-01-01'",
    "eu": "country IN ('DE', 'FR', 'ES', 'IT')",
    "eu_young": "country IN ('DE', 'FR', 'ES', 'IT') AND age < 25",
    "enterprise_us": "plan = 'enterprise' AND country = 'US'",
    "no_age": "age IS NULL",
    "mobile_trial": "tags @> ARRAY['mobile', 'trial']",
    "value_band": "lifetime_value BETWEEN 100 AND 500",
    "free_active": (
        "plan = 'free' AND NOT churned AND last_seen > TIMESTAMPTZ '2024-12-01 00:00:00+00'"
    ),
    "seniors_or_partners": "age >= 65 OR 'partner' = ANY(tags)",
    "gb_ca_value": "country IN ('GB', 'CA') AND lifetime_value > 200 AND NOT churned",
}

_TAGS = "tags.`Array(String)`"  # the engine keeps a list in a one-type Variant (it can be NULL)
CLICKHOUSE: dict[str, str] = {
    "us": "country = 'US'",
    "adults_30": "age >= 30",
    "pro_or_team": "plan IN ('pro', 'team')",
    "us_pro_30": "country = 'US' AND age >= 30 AND plan IN ('pro', 'team')",
    "active": "NOT churned",
    "vip": f"has({_TAGS}, 'vip')",
    "vip_not_churned": f"has({_TAGS}, 'vip') AND NOT churned",
    "high_value": "lifetime_value > 1000",
    "recent_30d": "last_seen > toDateTime64('2024-12-02 00:00:00', 6, 'UTC')",
    "dormant": "last_seen < toDateTime64('2024-06-01 00:00:00', 6, 'UTC')",
    "signed_2024": "signup_date >= toDate32('2024-01-01')",
    "eu": "country IN ('DE', 'FR', 'ES', 'IT')",
    "eu_young": "country IN ('DE', 'FR', 'ES', 'IT') AND age < 25",
    "enterprise_us": "plan = 'enterprise' AND country = 'US'",
    "no_age": "age IS NULL",
    "mobile_trial": f"hasAll({_TAGS}, ['mobile', 'trial'])",
    "value_band": "lifetime_value BETWEEN 100 AND 500",
    "free_active": (
        "plan = 'free' AND NOT churned"
        " AND last_seen > toDateTime64('2024-12-01 00:00:00', 6, 'UTC')"
    ),
    "seniors_or_partners": f"age >= 65 OR has({_TAGS}, 'partner')",
    "gb_ca_value": "country IN ('GB', 'CA') AND lifetime_value > 200 AND NOT churned",
}

HAND_WRITTEN: dict[str, dict[str, str]] = {
    "duckdb": DUCKDB,
    "postgres": POSTGRES,
    "clickhouse": CLICKHOUSE,
}
"""Engine kind -> audience key -> the WHERE condition a person would write in its SQL."""
