"""Attempts counted as they are made, for ``/metrics``: counters that never go down, as
Prometheus needs, where the rows they could be counted from are deleted (the delivery log by
retention and with its destination, an audience's sync state with the audience).

A destination (or an audience) counts in one of :data:`SHARDS` rows of its subject, kind and
outcome, chosen from its id, in the transaction that records the attempts, written just
before it commits: on PostgreSQL the row's lock is held from that write to the commit only
(a delivery step that logs attempts first and then builds messages for a while would
otherwise hold it all along, and runs of destinations on the same row would wait for it).
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Mapping

from sqlalchemy import event, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from audiences.store.tables import AttemptTotalRow

SHARDS = 16
"""Rows one subject, kind and outcome is spread over."""
DELIVERY, SYNC = "delivery", "sync"
"""The subjects: delivery attempts (kind: the destination's), syncs (no kind)."""


PENDING = "attempt_totals"
"""Where a session keeps the counts it writes when it commits (``Session.info``)."""


def add(
    session: Session, *, subject: str, of: str, counts: Mapping[str, int], kind: str = ""
) -> None:
    """Count attempts of ``subject`` made for ``of`` (a destination's or audience's id), by
    outcome (``{"delivered": 3}``), when the session's transaction commits (nothing if it
    rolls back)."""
    session.connection()  # the counts belong to a transaction: begun now if it was not yet
    pending: Counter[tuple[str, str, str, int]] | None = session.info.get(PENDING)
    if pending is None:
        pending = session.info[PENDING] = Counter()
        if not event.contains(session, "before_commit", _write):
            event.listen(session, "before_commit", _write)
            event.listen(session, "after_soft_rollback", _forget)
    shard = zlib.crc32(of.encode()) % SHARDS
    for outcome, count in counts.items():
        pending[(subject, kind, outcome, shard)] += count


def _write(session: Session) -> None:
    """Before the commit: the counts kept, added to their rows (made on first use)."""
    pending: Counter[tuple[str, str, str, int]] = session.info.pop(PENDING, None) or Counter()
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    total = AttemptTotalRow.__table__.c.count
    for (subject, kind, outcome, shard), count in sorted(pending.items()):  # one lock order
        if count:
            values = {"subject": subject, "kind": kind, "outcome": outcome, "shard": shard}
            statement = insert(AttemptTotalRow).values(**values, count=count)
            session.execute(
                statement.on_conflict_do_update(
                    index_elements=["subject", "kind", "outcome", "shard"],
                    set_={"count": total + statement.excluded.count},
                )
            )


def _forget(session: Session, previous_transaction: object) -> None:
    """A rollback: the counts kept were of attempts it undid."""
    session.info.pop(PENDING, None)


def totals(session: Session, subject: str) -> dict[tuple[str, str], int]:
    """Every attempt of ``subject`` counted so far, by (kind, outcome)."""
    rows = session.execute(
        select(AttemptTotalRow.kind, AttemptTotalRow.outcome, func.sum(AttemptTotalRow.count))
        .where(AttemptTotalRow.subject == subject)
        .group_by(AttemptTotalRow.kind, AttemptTotalRow.outcome)
    )
    return {(str(kind), str(outcome)): int(count) for kind, outcome, count in rows}
