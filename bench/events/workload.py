"""The 20 behavioural audiences of the events benchmark: each rule in our language beside the same
condition written by hand as DuckDB SQL (the query a person would write: ``GROUP BY ... HAVING``,
anti-joins, a window function, a self-join), over ``{ev}`` (events) and ``{pt}`` (profiles), with
``{now}`` the reference time.

Sums and averages of ``amount`` (a FLOAT) are written by hand as the engine defines them
(docs/rules.md, "Sums and averages"): each amount in whole micro-units, summed exactly (HUGEINT),
the sum rounded once to the nearest double. Plain ``sum(amount)`` adds doubles in whatever order
DuckDB's threads meet them, so a profile whose amounts average exactly 150 fell on either side
of ``> 150`` from one run to the next (issue #13), and no equality check could hold.
"""

from __future__ import annotations

ORDER = "event = 'order'"
MICRO = "CASE WHEN abs(amount) <= 1e12 THEN CAST(floor(amount * 1e6 + 0.5) AS BIGINT) END"
"""An amount as whole micro-units (no value beyond ±1e12)."""
EXACT = "((CAST(s >> 32 AS DOUBLE) * 4294967296 + CAST(s & 4294967295 AS DOUBLE)) / 1e6)"
"""The exact sum ``s`` of micro-units as the double nearest it, in units: two exact halves
added once (DuckDB's own HUGEINT to DOUBLE cast need not round correctly)."""


def exact(where: str, test: str) -> str:
    """The profiles whose amounts, over the events ``where`` selects, pass ``test`` of
    ``total`` (their exact sum) and ``n`` (how many there are)."""
    count = f", COUNT({MICRO}) AS n" if " n " in f"{test} " else ""
    return (
        f"SELECT pid FROM (SELECT pid, SUM({MICRO}) AS s{count} FROM {{ev}}"
        f" WHERE {where} GROUP BY pid) WHERE {test.replace('total', EXACT)}"
    )


BEHAVIOUR: dict[str, tuple[str, str]] = {
    "orders_3": (
        f"count(*) FILTER (WHERE {ORDER}) >= 3",
        "SELECT pid FROM {ev} WHERE event = 'order' GROUP BY pid HAVING count(*) >= 3",
    ),
    "orders_30d_2": (
        f"count(*) FILTER (WHERE {ORDER} AND timestamp >= now() - INTERVAL 30 DAY) >= 2",
        "SELECT pid FROM {ev} WHERE event = 'order' AND \"timestamp\" >= {now} - INTERVAL 30 DAY"
        " GROUP BY pid HAVING count(*) >= 2",
    ),
    "never_ordered": (
        f"count(*) FILTER (WHERE {ORDER}) = 0",
        "SELECT pid FROM {pt} ANTI JOIN (SELECT DISTINCT pid FROM {ev} WHERE event = 'order') o"
        " USING (pid)",
    ),
    "spend_30d": (
        f"sum(amount) FILTER (WHERE {ORDER} AND timestamp >= now() - INTERVAL 30 DAY) > 300",
        exact("event = 'order' AND \"timestamp\" >= {now} - INTERVAL 30 DAY", "total > 300"),
    ),
    "avg_order": (
        f"avg(amount) FILTER (WHERE {ORDER}) > 150",
        exact("event = 'order'", "total / n > 150"),
    ),
    "max_order": (
        f"max(amount) FILTER (WHERE {ORDER}) >= 500",
        "SELECT pid FROM {ev} WHERE event = 'order' GROUP BY pid HAVING max(amount) >= 500",
    ),
    "first_order_7d": (
        f"min(timestamp) FILTER (WHERE {ORDER}) >= now() - INTERVAL 7 DAY",
        "SELECT pid FROM {ev} WHERE event = 'order' GROUP BY pid"
        ' HAVING min("timestamp") >= {now} - INTERVAL 7 DAY',
    ),
    "lapsed": (
        f"max(timestamp) FILTER (WHERE {ORDER}) < now() - INTERVAL 60 DAY",
        "SELECT pid FROM {ev} WHERE event = 'order' GROUP BY pid"
        ' HAVING max("timestamp") < {now} - INTERVAL 60 DAY',
    ),
    "distinct_skus": (
        "count(DISTINCT sku) FILTER (WHERE event = 'product_viewed') >= 5",
        "SELECT pid FROM {ev} WHERE event = 'product_viewed' GROUP BY pid"
        " HAVING count(DISTINCT sku) >= 5",
    ),
    "last_channel_email": (
        "last(channel) FILTER (WHERE event = 'page_view') = 'email'",
        "SELECT pid FROM (SELECT pid, channel FROM {ev}"
        " WHERE event = 'page_view' AND channel IS NOT NULL"
        ' QUALIFY row_number() OVER (PARTITION BY pid ORDER BY "timestamp" DESC, channel DESC) = 1)'
        " WHERE channel = 'email'",
    ),
    "stopped_viewing": (
        "count(*) FILTER (WHERE event = 'page_view' AND timestamp BETWEEN now() - INTERVAL 90 DAY"
        " AND now() - INTERVAL 30 DAY) >= 5 AND count(*) FILTER (WHERE event = 'page_view'"
        " AND timestamp >= now() - INTERVAL 30 DAY) = 0",
        "SELECT pid FROM {ev} WHERE event = 'page_view' GROUP BY pid"
        ' HAVING count(*) FILTER (WHERE "timestamp" BETWEEN {now} - INTERVAL 90 DAY'
        " AND {now} - INTERVAL 30 DAY) >= 5"
        ' AND count(*) FILTER (WHERE "timestamp" >= {now} - INTERVAL 30 DAY) = 0',
    ),
    "pricing_2w": (
        "count(*) FILTER (WHERE event = 'page_view' AND page = '/pricing'"
        " AND timestamp >= now() - INTERVAL 14 DAY) >= 2",
        "SELECT pid FROM {ev} WHERE event = 'page_view' AND page = '/pricing'"
        ' AND "timestamp" >= {now} - INTERVAL 14 DAY GROUP BY pid HAVING count(*) >= 2',
    ),
    "us_buyers": (
        f"country = 'US' AND count(*) FILTER (WHERE {ORDER}"
        " AND timestamp >= now() - INTERVAL 90 DAY) >= 1",
        "SELECT pid FROM {pt} WHERE country = 'US' AND pid IN (SELECT pid FROM {ev}"
        " WHERE event = 'order' AND \"timestamp\" >= {now} - INTERVAL 90 DAY)",
    ),
    "free_pricing": (
        "plan = 'free' AND count(*) FILTER (WHERE event = 'pricing_viewed'"
        " AND timestamp >= now() - INTERVAL 7 DAY) >= 1",
        "SELECT pid FROM {pt} WHERE plan = 'free' AND pid IN (SELECT pid FROM {ev}"
        " WHERE event = 'pricing_viewed' AND \"timestamp\" >= {now} - INTERVAL 7 DAY)",
    ),
    "active_day": (
        "count(*) FILTER (WHERE timestamp >= now() - INTERVAL 1 DAY) >= 1",
        'SELECT DISTINCT pid FROM {ev} WHERE "timestamp" >= {now} - INTERVAL 1 DAY',
    ),
    "cart_abandon": (
        "count(*) FILTER (WHERE event = 'add_to_cart' AND timestamp >= now() - INTERVAL 7 DAY)"
        f" >= 1 AND count(*) FILTER (WHERE {ORDER} AND timestamp >= now() - INTERVAL 7 DAY) = 0",
        "SELECT pid FROM {ev} WHERE event = 'add_to_cart'"
        ' AND "timestamp" >= {now} - INTERVAL 7 DAY'
        " EXCEPT SELECT pid FROM {ev} WHERE event = 'order'"
        ' AND "timestamp" >= {now} - INTERVAL 7 DAY',
    ),
    "big_spender": (
        f"sum(amount) FILTER (WHERE {ORDER}) > 1000",
        exact("event = 'order'", "total > 1000"),
    ),
    "black_friday": (
        f"count(*) FILTER (WHERE {ORDER} AND timestamp >= TIMESTAMP '2024-11-29 00:00:00'"
        " AND timestamp < TIMESTAMP '2024-12-03 00:00:00') >= 1",
        "SELECT DISTINCT pid FROM {ev} WHERE event = 'order'"
        " AND \"timestamp\" >= TIMESTAMPTZ '2024-11-29 00:00:00+00'"
        " AND \"timestamp\" < TIMESTAMPTZ '2024-12-03 00:00:00+00'",
    ),
    "view_then_order": (
        "sequence(event = 'product_viewed', event = 'order', within => INTERVAL 1 DAY)"
        " FILTER (WHERE timestamp >= now() - INTERVAL 30 DAY)",
        "SELECT DISTINCT v.pid FROM {ev} v JOIN {ev} o ON o.pid = v.pid"
        " WHERE v.event = 'product_viewed' AND o.event = 'order'"
        ' AND v."timestamp" >= {now} - INTERVAL 30 DAY AND o."timestamp" > v."timestamp"'
        ' AND o."timestamp" <= v."timestamp" + INTERVAL 1 DAY',
    ),
    "heavy": (
        "count(*) >= 50",
        "SELECT pid FROM {ev} GROUP BY pid HAVING count(*) >= 50",
    ),
}
