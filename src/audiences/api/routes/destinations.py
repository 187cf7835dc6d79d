"""``/v1/destinations``: create, list, get, replace, patch, delete; rotate a secret, reset,
send a test message; the delivery log and redelivery."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from audiences.api.content import PATCH_BODY, PatchBody, RequireJson
from audiences.api.deps import (
    DeliveryId,
    DestinationId,
    ReadCaller,
    SessionDep,
    SettingsDep,
    WriteCaller,
)
from audiences.api.listing import FIELDS_DOC, page_response, sparse_one, to_list_query
from audiences.api.preconditions import ExpectedVersion, IdempotencyDep, etag
from audiences.api.problems import responses
from audiences.api.queries import KnownQuery
from audiences.schemas.common import names_pattern, page_of
from audiences.schemas.destinations import (
    Delivery,
    DeliveryListParams,
    Destination,
    DestinationCreate,
    DestinationListItem,
    DestinationListParams,
    DestinationWrite,
    Redeliver,
    Redelivered,
    SecretRotated,
    TestResult,
)
from audiences.services import delivery_log, destinations
from audiences.services.patching import Patch
from audiences.store.tables import DestinationRow

router = APIRouter(prefix="/v1/destinations", tags=["destinations"], dependencies=[KnownQuery])
ONE = responses(400, 401, 404, 429)
WRITE = responses(400, 401, 403, 404, 409, 412, 413, 415, 422, 428, 429)
ACTION = responses(400, 401, 403, 404, 409, 429)


@router.post(
    "",
    status_code=201,
    response_model=Destination,
    dependencies=[RequireJson],
    responses=responses(400, 401, 403, 409, 413, 415, 422, 429),
)
def create_destination(
    body: DestinationCreate,
    request: Request,
    session: SessionDep,
    caller: WriteCaller,
    idem: IdempotencyDep,
    settings: SettingsDep,
) -> Response:
    """Create a destination; a webhook's answer carries its secret (this once). 201 with
    ``Location``; replays under ``Idempotency-Key``."""
    made = destinations.create(session, caller=caller, data=body, settings=settings)
    row = made.row
    location = str(request.url_for("get_destination", destination_id=row.id).path)
    rendered = _render(session, row, secret=made.secret)
    return idem.respond(201, rendered, {"Location": location, "ETag": etag(row.version)})


@router.get(
    "", response_model=page_of(DestinationListItem), responses=responses(400, 401, 422, 429)
)
def list_destinations(
    params: Annotated[DestinationListParams, Query()],
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    caller: ReadCaller,
) -> Response:
    """List destinations: `name`, `kind`, `enabled` filters, `q`, `sort`, paging, `fields`."""
    query = to_list_query(params, settings, model=Destination)
    page = destinations.list_(session, caller=caller, query=query)
    return page_response(request, page, query, lambda row: _render(session, row))


@router.get("/{destination_id}", response_model=DestinationListItem, responses=ONE)
def get_destination(
    destination_id: DestinationId,
    session: SessionDep,
    caller: ReadCaller,
    fields: Annotated[
        str | None,
        Query(
            max_length=1000,
            pattern=names_pattern(Destination.model_fields),
            description=FIELDS_DOC,
        ),
    ] = None,
) -> Response:
    """One destination, with its ETag, `backlog` and `last_delivery_at`."""
    row = destinations.get(session, caller=caller, destination_id=destination_id)
    body = sparse_one(_render(session, row), fields, Destination)
    return JSONResponse(body, headers={"ETag": etag(row.version)})


@router.put(
    "/{destination_id}", response_model=Destination, dependencies=[RequireJson], responses=WRITE
)
def replace_destination(
    destination_id: DestinationId,
    body: DestinationWrite,
    session: SessionDep,
    caller: WriteCaller,
    version: ExpectedVersion,
    settings: SettingsDep,
) -> Response:
    """Replace every writable field; send ``If-Match`` to be safe against lost updates."""
    row = destinations.replace(
        session,
        caller=caller,
        destination_id=destination_id,
        data=body,
        expected_version=version,
        settings=settings,
    )
    return _one(session, row)


@router.patch(
    "/{destination_id}", response_model=Destination, openapi_extra=PATCH_BODY, responses=WRITE
)
def patch_destination(
    destination_id: DestinationId,
    session: SessionDep,
    caller: WriteCaller,
    version: ExpectedVersion,
    settings: SettingsDep,
    patch: Patch = PatchBody,
) -> Response:
    """Edit with JSON Patch (RFC 6902) or JSON merge patch (RFC 7386)."""
    row = destinations.patch(
        session,
        caller=caller,
        destination_id=destination_id,
        patch=patch,
        expected_version=version,
        settings=settings,
    )
    return _one(session, row)


@router.delete("/{destination_id}", status_code=204, responses=WRITE)
def delete_destination(
    destination_id: DestinationId,
    session: SessionDep,
    caller: WriteCaller,
    version: ExpectedVersion,
) -> Response:
    """Delete a destination and its delivery log."""
    destinations.delete_(
        session, caller=caller, destination_id=destination_id, expected_version=version
    )
    return Response(status_code=204)


@router.post("/{destination_id}/rotate-secret", response_model=SecretRotated, responses=ACTION)
def rotate_destination_secret(
    destination_id: DestinationId, session: SessionDep, caller: WriteCaller, settings: SettingsDep
) -> SecretRotated:
    """A new signing secret; the old one keeps signing (a second signature) for
    `AUDIENCES_WEBHOOK_SECRET_OVERLAP_HOURS`."""
    return destinations.rotate_secret(
        session, caller=caller, destination_id=destination_id, settings=settings
    )


@router.post("/{destination_id}/reset", response_model=Destination, responses=ACTION)
def reset_destination(
    destination_id: DestinationId, session: SessionDep, caller: WriteCaller
) -> Response:
    """Send the full membership of every followed audience again (as `entered`), then only
    changes."""
    row = destinations.reset(session, caller=caller, destination_id=destination_id)
    return _one(session, row)


@router.post("/{destination_id}/test", response_model=TestResult, responses=ACTION)
def test_destination(
    destination_id: DestinationId, session: SessionDep, caller: WriteCaller, settings: SettingsDep
) -> TestResult:
    """Send a `destination.test` message now (signed, not retried) and say how it went."""
    testing = delivery_log.start_test(session, caller=caller, destination_id=destination_id)
    session.commit()  # logged as `sending`: nothing held open while the receiver answers
    outcome = delivery_log.send_test(testing, settings=settings)
    message = delivery_log.record_test(session, testing=testing, outcome=outcome)
    return TestResult(
        delivered=message.status == "delivered",
        delivery=delivery_log.detailed(session, message),
    )


@router.get(
    "/{destination_id}/deliveries",
    response_model=page_of(Delivery),
    responses=responses(400, 401, 404, 422, 429),
)
def list_deliveries(
    destination_id: DestinationId,
    params: Annotated[DeliveryListParams, Query()],
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    caller: ReadCaller,
) -> Response:
    """The delivery log: each message, its status, attempts and last answer; newest first."""
    query = to_list_query(params, settings, model=Delivery)
    page = delivery_log.list_(session, caller=caller, destination_id=destination_id, query=query)
    return page_response(
        request, page, query, lambda row: delivery_log.to_model(row).model_dump(mode="json")
    )


@router.get("/{destination_id}/deliveries/{delivery_id}", response_model=Delivery, responses=ONE)
def get_delivery(
    destination_id: DestinationId, delivery_id: DeliveryId, session: SessionDep, caller: ReadCaller
) -> Delivery:
    """One message: every attempt, and the body sent."""
    message = delivery_log.get(
        session, caller=caller, destination_id=destination_id, delivery_id=delivery_id
    )
    return delivery_log.detailed(session, message)


@router.post(
    "/{destination_id}/deliveries/{delivery_id}/redeliver",
    status_code=202,
    response_model=Delivery,
    responses=ACTION,
)
def redeliver_delivery(
    destination_id: DestinationId,
    delivery_id: DeliveryId,
    session: SessionDep,
    caller: WriteCaller,
) -> Delivery:
    """Send one message again: same `webhook-id` and body, a fresh retry schedule."""
    message = delivery_log.redeliver_one(
        session, caller=caller, destination_id=destination_id, delivery_id=delivery_id
    )
    return delivery_log.to_model(message)


@router.post(
    "/{destination_id}/redeliver",
    status_code=202,
    response_model=Redelivered,
    dependencies=[RequireJson],
    responses=responses(400, 401, 403, 404, 413, 415, 422, 429),
)
def redeliver_destination(
    destination_id: DestinationId, body: Redeliver, session: SessionDep, caller: WriteCaller
) -> Redelivered:
    """Send again every message created at or after `since`, in their order."""
    count = delivery_log.redeliver_since(
        session, caller=caller, destination_id=destination_id, since=body.since
    )
    return Redelivered(redelivered=count)


def _one(session: Session, row: DestinationRow) -> JSONResponse:
    return JSONResponse(_render(session, row), headers={"ETag": etag(row.version)})


def _render(session: Session, row: DestinationRow, *, secret: str | None = None) -> dict[str, Any]:
    return destinations.to_model(session, row, secret=secret).model_dump(mode="json")
