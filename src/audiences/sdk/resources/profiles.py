"""``/v1/profiles`` and ``/v1/evaluate``: write, read and erase profiles; which audiences one
is in; which it would be in, and why, without storing anything."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from audiences.schemas.profiles import (
    BatchResult,
    EvaluateEvent,
    EvaluateResult,
    Profile,
    ProfileAudiences,
)
from audiences.sdk._call import Call, endpoint, model, nothing, rfc3339
from audiences.sdk._resource import AsyncResource, SyncResource, sends, sends_async

PATH = "/v1/profiles"
EvaluateEventLike = EvaluateEvent | Mapping[str, Any]
"""An event to evaluate with: the wire model, or the same fields as a mapping."""


def _event(event: EvaluateEventLike) -> dict[str, Any]:
    if isinstance(event, EvaluateEvent):
        return event.model_dump(mode="json", exclude_none=True)
    body = dict(event)
    if isinstance(body.get("timestamp"), datetime):
        body["timestamp"] = rfc3339(body["timestamp"])
    return body


class Calls:
    """The requests of the profile resource."""

    @staticmethod
    def upsert(profile_id: str, attributes: dict[str, Any]) -> Call[Profile]:
        """Create a profile or merge ``attributes`` into it (``None`` clears one)."""
        body = {"attributes": attributes}
        return Call("PUT", endpoint(PATH + "/{}", profile_id), model(Profile), json=body)

    @staticmethod
    def upsert_many(profiles: list[dict[str, Any]]) -> Call[BatchResult]:
        """Up to 10,000 ``{"id": …, "attributes": {…}}`` at once: a result per record."""
        # An upsert merges: sent twice, the second changes nothing more.
        body = {"profiles": profiles}
        return Call("POST", f"{PATH}/batch", model(BatchResult), json=body, safe=True)

    @staticmethod
    def get(profile_id: str) -> Call[Profile]:
        """A stored profile."""
        return Call("GET", endpoint(PATH + "/{}", profile_id), model(Profile))

    @staticmethod
    def delete(profile_id: str) -> Call[None]:
        """Erase it: its data and its membership everywhere."""
        return Call("DELETE", endpoint(PATH + "/{}", profile_id), nothing)

    @staticmethod
    def audiences(profile_id: str) -> Call[ProfileAudiences]:
        """Every audience it is in."""
        return Call("GET", endpoint(PATH + "/{}/audiences", profile_id), model(ProfileAudiences))

    @staticmethod
    def evaluate(
        profile_id: str | None = None,
        *,
        attributes: dict[str, Any] | None = None,
        events: Iterable[EvaluateEventLike] | None = None,
        explain: bool = True,
    ) -> Call[EvaluateResult]:
        """Which audiences a profile (stored, or given by ``attributes``) would be in, and why.

        ``events`` (at most 1,000: ``EvaluateEvent`` models or mappings of the same fields,
        ``timestamp`` a ``datetime`` or RFC 3339 text, the evaluation's time when left out) are
        evaluated as if stored, beside a stored profile's own; nothing is stored."""
        body: dict[str, Any] = {"attributes": attributes or {}, "explain": explain}
        if profile_id is not None:
            body["profile_id"] = profile_id
        if events is not None:
            body["events"] = [_event(event) for event in events]
        return Call("POST", "/v1/evaluate", model(EvaluateResult), json=body, safe=True)


class Profiles(SyncResource):
    """Profiles: ``client.profiles``."""

    upsert = sends(Calls.upsert)
    upsert_many = sends(Calls.upsert_many)
    get = sends(Calls.get)
    delete = sends(Calls.delete)
    audiences = sends(Calls.audiences)
    evaluate = sends(Calls.evaluate)


class AsyncProfiles(AsyncResource):
    """Profiles: ``client.profiles`` of an :class:`AsyncClient`."""

    upsert = sends_async(Calls.upsert)
    upsert_many = sends_async(Calls.upsert_many)
    get = sends_async(Calls.get)
    delete = sends_async(Calls.delete)
    audiences = sends_async(Calls.audiences)
    evaluate = sends_async(Calls.evaluate)
