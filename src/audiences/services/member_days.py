"""Static members by the day they joined: a re-add moves a profile to today, and expiry drops
the days older than the audience's ``ttl_days`` (whole days, so a ttl costs one bitmap a day,
not a row a member)."""

from __future__ import annotations

from datetime import datetime

from pyroaring import BitMap
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from audiences.errors import Conflict
from audiences.kit.clock import utcnow
from audiences.membership.bitmaps import deserialize, serialize
from audiences.services import lifecycle, memberships, run_history
from audiences.store.tables import AudienceRow, MemberDayRow, RunRow


def workspaces_with_ttl(session: Session) -> list[str]:
    """The workspaces that hold a live static audience with ``ttl_days``: where an expiry job
    has work (the scheduler queues one for each, hourly)."""
    stmt = (
        select(AudienceRow.workspace_id)
        .where(AudienceRow.kind == "static", AudienceRow.ttl_days.is_not(None), lifecycle.live())
        .distinct()
        .order_by(AudienceRow.workspace_id)
    )
    return list(session.scalars(stmt))


def expire(
    session: Session, *, audience: AudienceRow, trigger: str, now: datetime | None = None
) -> RunRow:
    """Members added longer ago than the audience's ``ttl_days`` leave; recorded as a run.

    Drops whole days. Without a ttl nothing leaves, and the run says so (size unchanged).
    """
    if audience.kind != "static":
        raise Conflict("only a static audience's members expire", code="audience_not_static")
    moment = now or utcnow()
    state = memberships.locked(session, audience)
    before = BitMap(memberships.members_of(session, state))
    days = load(session, audience, before, moment)
    leaving = BitMap()
    if audience.ttl_days is not None:
        cutoff = day_of(moment) - audience.ttl_days
        old = [day for day in days if day < cutoff]
        for day in old:
            leaving |= days.pop(day)
        for bitmap in days.values():
            leaving -= bitmap
        if old:
            session.execute(
                delete(MemberDayRow).where(
                    MemberDayRow.audience_id == audience.id, MemberDayRow.day < cutoff
                )
            )
    after = before - leaving
    change = memberships.replace(session, audience=audience, members=after, cause="expiry")
    return run_history.record_change(
        session, audience=audience, state=state, members=after, change=change, trigger=trigger
    )


def load(
    session: Session, audience: AudienceRow, members: BitMap, now: datetime
) -> dict[int, BitMap]:
    """The audience's day bitmaps; members no day holds (written before days were kept)
    join today."""
    rows = session.scalars(select(MemberDayRow).where(MemberDayRow.audience_id == audience.id))
    days = {row.day: deserialize(row.bitmap) for row in rows}
    placed = BitMap.union(*days.values()) if days else BitMap()
    unplaced = members - placed
    if unplaced:
        days[day_of(now)] = days.get(day_of(now), BitMap()) | unplaced
    return days


def save(session: Session, audience: AudienceRow, days: dict[int, BitMap]) -> None:
    """Store the day bitmaps as changed (empty days dropped)."""
    stored = {
        row.day: row
        for row in session.scalars(
            select(MemberDayRow).where(MemberDayRow.audience_id == audience.id)
        )
    }
    for day, bitmap in days.items():
        row = stored.get(day)
        if not bitmap:
            if row is not None:
                session.delete(row)
            continue
        blob = serialize(bitmap)
        if row is None:
            session.add(
                MemberDayRow(
                    audience_id=audience.id,
                    day=day,
                    workspace_id=audience.workspace_id,
                    bitmap=blob,
                )
            )
        elif row.bitmap != blob:
            row.bitmap = blob
    session.flush()


def day_of(moment: datetime) -> int:
    """The UTC day of ``moment``, counted as ``date.toordinal()``."""
    return moment.date().toordinal()
