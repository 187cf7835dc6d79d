"""Synthetic events for the behaviour benchmark, drawn in SQL from hashes so every run sees the
same data: page views, product views, carts, orders with amounts, pricing views, e-mails opened
and sign-ups, over the 180 days before :data:`NOW`, skewed so that a few profiles are very busy.

The bulk path writes straight into the engine's events table (one ``INSERT ... SELECT`` per chunk);
it exists only here, to load tens of millions of events quickly. The product's path, ``POST
/v1/events``, is measured beside the engine's own bulk insert of the same events.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from audiences.schemas.attributes import AttributeType
from audiences.schemas.events import EventPropertyDeclare
from audiences.services import event_properties
from bench.membership import data as profile_data

if TYPE_CHECKING:
    from bench.membership.run import Bench

NOW = datetime(2025, 1, 1, tzinfo=UTC)
DAYS = 180
PROPERTIES: dict[str, AttributeType] = {
    "page": AttributeType.STRING,
    "sku": AttributeType.STRING,
    "amount": AttributeType.FLOAT,
    "channel": AttributeType.STRING,
}
EVENTS = [  # name, share in percent
    ("page_view", 55),
    ("product_viewed", 15),
    ("add_to_cart", 8),
    ("order", 5),
    ("pricing_viewed", 5),
    ("email_opened", 7),
    ("signed_up", 5),
]
PAGES = ["/", "/pricing", "/docs", "/blog", "/product"]
CHANNELS = ["web", "email", "ads", "social"]
SKUS = 500


def _pick_event(h: str) -> str:
    """A CASE choosing the event name from ``h`` (0..99) by :data:`EVENTS`' shares."""
    arms, bound = [], 0
    for name, share in EVENTS:
        bound += share
        arms.append(f"WHEN {h} < {bound} THEN '{name}'")
    return "CASE " + " ".join(arms) + " END"


def _sql_list(values: list[str]) -> str:
    return "[" + ", ".join(f"'{value}'" for value in values) + "]"


def bulk_sql(
    table: str,
    profiles: int,
    start: int,
    stop: int,
    *,
    now: datetime = NOW,
    arrived: int = 0,
    id_share: int = 0,
) -> str:
    """One INSERT of events ``start`` .. ``stop - 1`` for pids 1 .. ``profiles``, timed over the
    :data:`DAYS` before ``now``.

    By default each is received at its own time, in no order. With ``arrived`` (the number of
    events of the whole load) they are received in the order of their numbers, evenly over the
    :data:`DAYS`, each sent up to an hour before it was received: a table appended to as events
    arrive, as ``POST /v1/events`` fills it. ``id_share`` percent carry a client ``event_id``
    (random hex).
    """
    at = f"TIMESTAMPTZ '{now.isoformat()}'"
    span = DAYS * 86400
    if arrived:
        received = f"{at} - to_microseconds(({span}.0 * ({arrived} - i) / {arrived} * 1e6)::BIGINT)"
        sent = "received - to_seconds((hash(i, 3) % 3600)::BIGINT)"
    else:
        received = sent = f"{at} - to_seconds((hash(i, 3) % {span})::BIGINT)"
    # Random hex, as the SDKs' UUIDs are: ids with a common prefix would let the row groups'
    # min/max of event_id skip the lookup of ids of another prefix.
    event_id = f"CASE WHEN hash(i, 8) % 100 < {id_share} THEN md5('bulk-' || i) END"
    return f"""
INSERT INTO {table} (pid, event, "timestamp", event_id, received_at, page, sku, amount, channel)
SELECT pid, event, ts, event_id, received,
  CASE WHEN event = 'page_view'
       THEN {_sql_list(PAGES)}[1 + (hash(i, 4) % {len(PAGES)})::INTEGER] END,
  CASE WHEN event IN ('product_viewed', 'add_to_cart', 'order')
       THEN 'sku-' || (hash(i, 5) % {SKUS}) END,
  CASE WHEN event = 'order' THEN round(exp(3.0 + (hash(i, 6) % 1000) / 300.0), 2) END,
  {_sql_list(CHANNELS)}[1 + (hash(i, 7) % {len(CHANNELS)})::INTEGER]
FROM (
  SELECT i,
    (1 + floor({profiles} * pow((hash(i, 1) % 1000003) / 1000003.0, 2)))::UINTEGER AS pid,
    {_pick_event("(hash(i, 2) % 100)")} AS event,
    {received} AS received,
    {sent} AS ts,
    {event_id} AS event_id
  FROM range({start}, {stop}) r(i)
)
"""


def declare_properties(bench: Bench) -> None:
    """Declare :data:`PROPERTIES` in the bench's workspace, as a user would before writing."""
    with bench.factory.begin() as session:
        for name, kind in PROPERTIES.items():
            event_properties.declare(
                session,
                caller=bench.caller,
                runtime=bench.runtime,
                name=name,
                data=EventPropertyDeclare(type=kind),
            )


def bulk_load(bench: Bench, profiles: int, events: int, *, chunk: int, **options: Any) -> None:
    """``profiles`` profiles and ``events`` events bulk-loaded by SQL into the bench
    workspace's own tables (the benchmarks' fast path), ``chunk`` events a statement;
    ``options`` go to :func:`bulk_sql`."""
    profile_data.bulk_load(bench.engine, bench.ws, profiles)
    declare_properties(bench)
    state = bench.engine._workspace(bench.ws)
    assert state is not None
    con = bench.engine._con.cursor()
    try:
        con.execute("SET TimeZone = 'UTC'")
        for start in range(0, events, chunk):
            stop = min(events, start + chunk)
            con.execute(bulk_sql(state.events, profiles, start, stop, **options))
    finally:
        con.close()
