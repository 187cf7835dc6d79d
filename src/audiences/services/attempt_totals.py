"""Delivery attempts counted as they are logged, for ``/metrics``: a counter that never goes
down, as Prometheus needs, where the delivery log's own rows are deleted by retention and with
their destination.

Each destination counts in one of :data:`SHARDS` rows of its kind and outcome (chosen from
its id), in the transaction that logs the attempts: on PostgreSQL a delivery step holds the
row's lock until it commits, so runs of different destinations mostly take different rows.
"""

from __future__ import annotations

import zlib

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from audiences.store.tables import DeliveryAttemptTotalRow

SHARDS = 16
"""Rows a kind and outcome is spread over."""


def add(session: Session, *, destination_id: str, kind: str, delivered: int, failed: int) -> None:
    """Count ``delivered`` and ``failed`` attempts of the destination (of ``kind``)."""
    shard = zlib.crc32(destination_id.encode()) % SHARDS
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    table = DeliveryAttemptTotalRow.__table__
    for outcome, count in (("delivered", delivered), ("failed", failed)):
        if count:
            statement = insert(DeliveryAttemptTotalRow).values(
                kind=kind, outcome=outcome, shard=shard, count=count
            )
            session.execute(
                statement.on_conflict_do_update(
                    index_elements=["kind", "outcome", "shard"],
                    set_={"count": table.c.count + statement.excluded.count},
                )
            )


def totals(session: Session) -> list[tuple[str, str, int]]:
    """Every attempt counted so far: (kind, outcome, count), one row each."""
    rows = session.execute(
        select(
            DeliveryAttemptTotalRow.kind,
            DeliveryAttemptTotalRow.outcome,
            func.sum(DeliveryAttemptTotalRow.count),
        ).group_by(DeliveryAttemptTotalRow.kind, DeliveryAttemptTotalRow.outcome)
    )
    return [(str(kind), str(outcome), int(count)) for kind, outcome, count in rows]
