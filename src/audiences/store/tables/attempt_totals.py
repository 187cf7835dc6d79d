"""Attempts counted as they are made, for ``/metrics``: delivery attempts by destination kind
and outcome, syncs of external audiences by outcome."""

from __future__ import annotations

from sqlalchemy import BigInteger, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from audiences.store.tables.base import Base


class AttemptTotalRow(Base):
    """How many attempts of a ``subject`` (``delivery`` or ``sync``) ended with an ``outcome``,
    by ``kind`` (a destination's; empty for syncs), spread over a few ``shard`` rows (one
    destination or audience always counts in the same one) so writers of different ones
    rarely wait for each other's row lock. Never decreased: the rows they were counted from
    (the delivery log, an audience's sync state) are deleted by retention and with their
    destination or audience, and a Prometheus counter must not go down."""

    __tablename__ = "attempt_totals"

    subject: Mapped[str] = mapped_column(String(16), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    outcome: Mapped[str] = mapped_column(String(16), primary_key=True)
    shard: Mapped[int] = mapped_column(Integer, primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0)
