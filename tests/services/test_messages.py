"""Making a destination's messages: a large revision is made a few messages at a time, the
cursor keeping its place inside the revision, and every change goes into exactly one message,
in order."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import select

from audiences.config import Settings
from audiences.errors import NotFound
from audiences.services import delivery_log, messages, static_members
from audiences.store.tables import (
    DestinationCursorRow,
    DestinationMessageBodyRow,
    DestinationMessageRow,
    DestinationRow,
    MembershipChangeRow,
)
from tests import factories
from tests.factories import Tenant, make_audience


def _webhook(tenant: Tenant, name: str, audience_ids: list[str]) -> str:
    """A webhook destination following the audiences (a public URL: nothing is sent here)."""
    made = tenant.admin.post(
        "/v1/destinations",
        json={
            "name": name,
            "kind": "webhook",
            "url": "https://example.com/in",
            "subscription": {"audience_ids": audience_ids},
        },
    )
    assert made.status_code == 201, made.text
    destination: str = made.json()["id"]
    return destination


def _write(app: FastAPI, tenant: Tenant, audience_id: str, action: str, ids: list[str]) -> None:
    answer = tenant.admin.post(
        f"/v1/audiences/{audience_id}/members", json={"action": action, "ids": ids}
    )
    assert answer.status_code == 202, answer.text
    factories.run_jobs(app, static_members.WRITE_HANDLER, static_members.IMPORT_HANDLER)


@pytest.mark.parametrize("limit", [1, 3])
def test_a_large_revision_is_made_into_messages_a_few_at_a_time(
    app: FastAPI, tenant: Tenant, settings: Settings, limit: int
) -> None:
    audience = make_audience(tenant.admin, kind="static", name="big")
    destination = _webhook(tenant, "chunks", [audience["id"]])
    small = settings.model_copy(update={"webhook_batch_size": 10})
    runtime = app.state.runtime

    def build(limit: int | None) -> tuple[int, int]:
        with app.state.session_factory.begin() as session:
            row = session.get_one(DestinationRow, destination)
            made = messages.build(session, runtime=runtime, row=row, settings=small, limit=limit)
            position = session.scalar(
                select(DestinationCursorRow.position).where(
                    DestinationCursorRow.destination_id == destination
                )
            )
        return len(made), int(position or 0)

    try:
        assert build(None) == (1, 0)  # the (empty) full list first
        entered = [f"u{n:03d}" for n in range(57)]
        _write(app, tenant, audience["id"], "add", entered)
        _write(app, tenant, audience["id"], "remove", entered[:44])
        positions = []
        while True:
            count, position = build(limit)
            assert count <= limit
            if count == 0:
                break
            positions.append(position)
        assert any(positions), "a revision was made in several builds"
        assert positions[-1] == 0
        with app.state.session_factory() as session:
            bodies = session.scalars(
                select(DestinationMessageBodyRow.body)
                .join(DestinationMessageRow)
                .where(DestinationMessageRow.destination_id == destination)
                .order_by(DestinationMessageRow.seq)
            ).all()
        sections: list[dict[str, Any]] = [
            section for body in bodies for section in json.loads(body)["data"]["audiences"]
        ]
        changes = [(c["change"], c["id"], c["revision"]) for s in sections for c in s["changes"]]
        assert all(len(s["changes"]) <= 10 for s in sections)
        revisions = sorted({revision for _, _, revision in changes})
        assert len(revisions) == 2
        assert changes == [("entered", i, revisions[0]) for i in _by_pid(changes, "entered")] + [
            ("exited", i, revisions[1]) for i in _by_pid(changes, "exited")
        ]
        assert sorted(i for c, i, _ in changes if c == "entered") == entered
        assert sorted(i for c, i, _ in changes if c == "exited") == entered[:44]
    finally:
        assert tenant.admin.delete(f"/v1/destinations/{destination}").status_code == 204


def _by_pid(changes: list[tuple[str, str, int]], kind: str) -> list[str]:
    """The ids of one kind of change in the order they came, each at most once."""
    ids = [i for c, i, _ in changes if c == kind]
    assert len(ids) == len(set(ids)), "no change twice"
    return ids


def test_a_message_filled_exactly_holds_only_its_audiences_changes(
    app: FastAPI, tenant: Tenant, settings: Settings
) -> None:
    """With the batch size reached exactly at the end of one audience's changes, the next
    audience's changes go to the next message: no empty section of it in the full one, and
    each message's ``first_change_at`` is the time of a change in it (the next audience's
    earlier change does not lower the full message's)."""
    first_audience = make_audience(tenant.admin, kind="static", name="first")
    second_audience = make_audience(tenant.admin, kind="static", name="second")
    destination = _webhook(tenant, "exact", [first_audience["id"], second_audience["id"]])
    small = settings.model_copy(update={"webhook_batch_size": 2})

    def build() -> list[tuple[DestinationMessageRow, str]]:
        """The messages a build made, each with its body as stored."""
        with app.state.session_factory.begin() as session:
            row = session.get_one(DestinationRow, destination)
            made = messages.build(session, runtime=app.state.runtime, row=row, settings=small)
            found = session.execute(
                select(DestinationMessageRow, DestinationMessageBodyRow.body)
                .join(DestinationMessageBodyRow)
                .where(DestinationMessageRow.id.in_([m.id for m in made]))
                .order_by(DestinationMessageRow.seq)
            ).all()
            session.expunge_all()
        return [(message, body) for message, body in found]

    try:
        assert len(build()) == 1  # the two (empty) full lists
        _write(app, tenant, second_audience["id"], "add", ["s1"])  # earlier
        _write(app, tenant, first_audience["id"], "add", ["f1", "f2"])  # fills a message
        with app.state.session_factory() as session:
            recorded = dict(
                session.execute(
                    select(MembershipChangeRow.audience_id, MembershipChangeRow.created_at)
                ).all()
            )
        (full, full_body), (rest, rest_body) = build()
        sections = [json.loads(body)["data"]["audiences"] for body in (full_body, rest_body)]
        assert [[(s["id"], len(s["changes"])) for s in each] for each in sections] == [
            [(first_audience["id"], 2)],
            [(second_audience["id"], 1)],
        ]
        assert (full.changes, rest.changes) == (2, 1)
        assert full.first_change_at == recorded[first_audience["id"]]
        assert rest.first_change_at == recorded[second_audience["id"]]
        assert rest.first_change_at is not None and full.first_change_at is not None
        assert rest.first_change_at < full.first_change_at
    finally:
        assert tenant.admin.delete(f"/v1/destinations/{destination}").status_code == 204


def test_a_delivery_deleted_between_its_two_reads_is_not_found(
    app: FastAPI, tenant: Tenant, settings: Settings
) -> None:
    """The one-delivery view reads the message, then its body: a destination deleted (or a
    purge) committed in between answers 404 ``delivery_not_found``, never a 500. Only on
    PostgreSQL, whose statements each see the latest commits: on SQLite every transaction
    begins immediate, so the delete would wait for the reader to end."""
    if app.state.session_factory.kw["bind"].dialect.name != "postgresql":
        pytest.skip("SQLite serializes the reader and the delete")
    audience = make_audience(tenant.admin, kind="static", name="gone")
    destination = _webhook(tenant, "deleted meanwhile", [audience["id"]])
    with app.state.session_factory.begin() as session:
        row = session.get_one(DestinationRow, destination)
        assert messages.build(session, runtime=app.state.runtime, row=row, settings=settings)
    reader = app.state.session_factory()
    try:
        message = reader.scalars(
            select(DestinationMessageRow).where(DestinationMessageRow.destination_id == destination)
        ).one()
        assert tenant.admin.delete(f"/v1/destinations/{destination}").status_code == 204
        with pytest.raises(NotFound) as caught:
            delivery_log.detailed(reader, message)
        assert caught.value.code == "delivery_not_found"
    finally:
        reader.close()
