"""A delivery run's lease on its destination: a run whose lease a rerun of its job took over
stops sending at its next renewal and, ending, leaves the rerun's lease alone."""

from __future__ import annotations

import time
from datetime import timedelta

from fastapi import FastAPI
from sqlalchemy import update

from audiences.kit.clock import utcnow
from audiences.services import delivery_leases, outbox
from audiences.store.tables import DestinationRow
from tests import factories
from tests.factories import Tenant
from tests.jobs.test_deliveries import deliver, static, webhook, write
from tests.webhook_receiver import receiving


def test_a_run_whose_lease_was_taken_over_stops_and_leaves_the_new_lease(
    hooks_app: FastAPI, hooks: Tenant
) -> None:
    audience = static(hooks.admin)
    ids = [f"u{n}" for n in range(400)]  # several messages of at most 50 changes
    write(hooks_app, hooks.admin, audience["id"], "add", ids)
    factory = hooks_app.state.session_factory
    taken = utcnow() + timedelta(hours=1)  # the lease a rerun of the job set
    made: dict[str, str] = {}

    def slow_and_taken_over(number: int, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
        if number == 0:
            with factory.begin() as session:
                session.execute(
                    update(DestinationRow)
                    .where(DestinationRow.id == made["id"])
                    .values(delivering_until=taken)
                )
        time.sleep(0.5)
        return 204, {}

    with receiving(slow_and_taken_over) as receiver:
        made.update(webhook(hooks.admin, receiver.url, audience_ids=[audience["id"]]))
        receiver.secrets.append(made["secret"])
        factories.run_jobs(hooks_app, outbox.DELIVER_HANDLER)
        stopped_at = len(receiver.requests)
        with factory() as session:
            row = session.get_one(DestinationRow, made["id"])
            assert row.delivering_job is not None and row.delivering_until == taken
        assert 0 < stopped_at < 9  # the run stopped before sending everything
        with factory.begin() as session:  # the rerun ends; what is left goes out
            session.execute(
                update(DestinationRow)
                .where(DestinationRow.id == made["id"])
                .values(delivering_job=None, delivering_until=None)
            )
        deliver(hooks_app, lambda: receiver.members(audience["key"]) == set(ids), seconds=30)
    with factory() as session:  # the last run renewed and released its own lease
        row = session.get_one(DestinationRow, made["id"])
        assert row.delivering_job is None and row.delivering_until is None


def test_a_lease_is_renewed_and_released_only_by_the_run_that_set_it(
    hooks_app: FastAPI, hooks: Tenant
) -> None:
    made = webhook(hooks.admin, "http://127.0.0.1:9/hook", all=True)
    factory = hooks_app.state.session_factory
    key = {"destination_id": made["id"], "job_id": "job-1"}
    first = utcnow() + timedelta(minutes=1)
    second, third = first + timedelta(minutes=1), first + timedelta(minutes=2)
    with factory.begin() as session:
        assert delivery_leases.claim(session, until=first, **key)  # a run of the job
        assert delivery_leases.claim(session, until=second, **key)  # its rerun takes over
        assert not delivery_leases.renew(session, held=first, until=third, **key)
        delivery_leases.release(session, held=first, **key)  # the first run ends: not its lease
    with factory() as session:
        assert session.get_one(DestinationRow, made["id"]).delivering_until == second
    with factory.begin() as session:
        assert delivery_leases.renew(session, held=second, until=third, **key)
        delivery_leases.release(session, held=third, **key)
    with factory() as session:
        assert session.get_one(DestinationRow, made["id"]).delivering_job is None
