"""Attempts counted as they are made, for ``/metrics``: counters that never go down, as
Prometheus needs, where the rows they could be counted from are deleted (the delivery log by
retention and with its destination, an audience's sync state with the audience).

A destination (or an audience) counts in one of :data:`SHARDS` rows of its subject, kind and
outcome, chosen from its id, in the transaction that records the attempts: on PostgreSQL a
delivery step holds the row's lock until it commits, so runs of different destinations mostly
take different rows.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from audiences.store.tables import AttemptTotalRow

SHARDS = 16
"""Rows one subject, kind and outcome is spread over."""
DELIVERY, SYNC = "delivery", "sync"
"""The subjects: delivery attempts (kind: the destination's), syncs (no kind)."""


def add(
    session: Session, *, subject: str, of: str, counts: Mapping[str, int], kind: str = ""
) -> None:
    """Count attempts of ``subject`` made for ``of`` (a destination's or audience's id), by
    outcome (``{"delivered": 3}``)."""
    shard = zlib.crc32(of.encode()) % SHARDS
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    total = AttemptTotalRow.__table__.c.count
    for outcome, count in counts.items():
        if count:
            values = {"subject": subject, "kind": kind, "outcome": outcome, "shard": shard}
            statement = insert(AttemptTotalRow).values(**values, count=count)
            session.execute(
                statement.on_conflict_do_update(
                    index_elements=["subject", "kind", "outcome", "shard"],
                    set_={"count": total + statement.excluded.count},
                )
            )


def totals(session: Session, subject: str) -> dict[tuple[str, str], int]:
    """Every attempt of ``subject`` counted so far, by (kind, outcome)."""
    rows = session.execute(
        select(AttemptTotalRow.kind, AttemptTotalRow.outcome, func.sum(AttemptTotalRow.count))
        .where(AttemptTotalRow.subject == subject)
        .group_by(AttemptTotalRow.kind, AttemptTotalRow.outcome)
    )
    return {(str(kind), str(outcome)): int(count) for kind, outcome, count in rows}
