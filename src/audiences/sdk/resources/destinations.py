"""``/v1/destinations``: webhooks and file folders that receive audiences' membership
changes; secrets, resets, test messages, the delivery log and redelivery."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from audiences.schemas.common import Page
from audiences.schemas.destinations import (
    Delivery,
    Destination,
    Redelivered,
    SecretRotated,
    TestResult,
)
from audiences.sdk._call import Call, clean, created, merge_patch, model, nothing, rfc3339
from audiences.sdk._resource import (
    AsyncResource,
    SyncResource,
    pages,
    pages_async,
    sends,
    sends_async,
)
from audiences.sdk.resources._targets import Target, match_headers, precondition, target_id

PATH = "/v1/destinations"
Names = list[str]
"""Audience ids or attribute names (``list`` is a method name inside :class:`Calls`)."""


SUBSCRIPTION_KEYS = ("audience_ids", "group_id", "all")
"""The keys of a subscription's three forms; an update sends those it leaves out as null."""


def subscription(
    audiences: list[str] | None = None, group: str | None = None, all_audiences: bool = False
) -> dict[str, Any]:
    """The ``subscription`` body: audience ids, a group id, or every audience."""
    if audiences is not None:
        return {"audience_ids": audiences}
    if group is not None:
        return {"group_id": group}
    return {"all": all_audiences}


class Calls:
    """The requests of the destination resource."""

    @staticmethod
    def list(
        *,
        q: str | None = None,
        kind: str | None = None,
        enabled: bool | None = None,
        sort: str | None = None,
        limit: int | None = None,
    ) -> Call[Page[Destination]]:
        """Every destination matching the filters."""
        params = clean({"q": q, "kind": kind, "enabled": enabled, "sort": sort, "limit": limit})
        return Call("GET", PATH, model(Page[Destination]), params=params)

    @staticmethod
    def get(destination: Target) -> Call[Destination]:
        """One destination, with its ``backlog`` and ``last_delivery_at``."""
        return Call("GET", f"{PATH}/{target_id(destination)}", model(Destination))

    @staticmethod
    def create(
        *,
        name: str,
        kind: str,
        subscription: dict[str, Any],
        url: str | None = None,
        secret: str | None = None,
        path: str | None = None,
        format: str | None = None,
        mode: str | None = None,
        interval_seconds: int | None = None,
        attributes: Names | None = None,
        description: str | None = None,
        enabled: bool = True,
    ) -> Call[Destination]:
        """A new destination (``kind`` ``webhook`` with ``url``, or ``file`` with ``path``);
        a webhook's answer carries its ``secret``, this once."""
        body: dict[str, Any] = {
            "name": name,
            "kind": kind,
            "subscription": subscription,
            "url": url,
            "secret": secret,
            "path": path,
            "format": format,
            "mode": mode,
            "interval_seconds": interval_seconds,
            "attributes": attributes or [],
            "description": description,
            "enabled": enabled,
        }
        return created(PATH, model(Destination), {k: v for k, v in body.items() if v is not None})

    @staticmethod
    def update(
        destination: Target, *, if_match: bool | int | str | None = None, **changes: Any
    ) -> Call[Destination]:
        """Change some fields (merge patch): ``enabled=True`` turns it on again. A new
        ``subscription`` replaces the old one whole (a merge patch would merge its keys)."""
        if isinstance(changes.get("subscription"), dict):
            changes["subscription"] = {
                **dict.fromkeys(SUBSCRIPTION_KEYS),
                **changes["subscription"],
            }
        tag = precondition(destination, if_match)
        return merge_patch(f"{PATH}/{target_id(destination)}", model(Destination), changes, tag)

    @staticmethod
    def delete(destination: Target, *, if_match: bool | int | str | None = None) -> Call[None]:
        """Delete it and its delivery log."""
        headers = match_headers(destination, if_match)
        return Call("DELETE", f"{PATH}/{target_id(destination)}", nothing, headers=headers)

    @staticmethod
    def rotate_secret(destination: Target) -> Call[SecretRotated]:
        """A new signing secret; the old one keeps signing for the overlap."""
        path = f"{PATH}/{target_id(destination)}/rotate-secret"
        return Call("POST", path, model(SecretRotated))

    @staticmethod
    def reset(destination: Target) -> Call[Destination]:
        """Send the full lists again, then only changes."""
        return Call("POST", f"{PATH}/{target_id(destination)}/reset", model(Destination), safe=True)

    @staticmethod
    def test(destination: Target) -> Call[TestResult]:
        """Send a test message now and say how it went."""
        return Call("POST", f"{PATH}/{target_id(destination)}/test", model(TestResult))

    @staticmethod
    def deliveries(
        destination: Target, *, status: str | None = None, limit: int | None = None
    ) -> Call[Page[Delivery]]:
        """The delivery log, newest first."""
        params = clean({"status": status, "limit": limit})
        path = f"{PATH}/{target_id(destination)}/deliveries"
        return Call("GET", path, model(Page[Delivery]), params=params)

    @staticmethod
    def delivery(destination: Target, delivery_id: str) -> Call[Delivery]:
        """One delivery with its attempts and body."""
        path = f"{PATH}/{target_id(destination)}/deliveries/{delivery_id}"
        return Call("GET", path, model(Delivery))

    @staticmethod
    def redeliver(
        destination: Target,
        *,
        delivery_id: str | None = None,
        since: datetime | str | None = None,
    ) -> Call[Any]:
        """Send one message again (``delivery_id``), or every one created since ``since`` (a
        ``datetime``, UTC when it has no offset, or RFC 3339 text)."""
        base = f"{PATH}/{target_id(destination)}"
        if delivery_id is not None:
            return Call(
                "POST", f"{base}/deliveries/{delivery_id}/redeliver", model(Delivery), safe=True
            )
        if since is None:
            raise ValueError("give delivery_id or since")
        body = {"since": rfc3339(since)}
        return Call("POST", f"{base}/redeliver", model(Redelivered), json=body, safe=True)


class Destinations(SyncResource):
    """Destinations: ``client.destinations``."""

    list = pages(Calls.list, Destination)
    get = sends(Calls.get)
    create = sends(Calls.create)
    update = sends(Calls.update)
    delete = sends(Calls.delete)
    rotate_secret = sends(Calls.rotate_secret)
    reset = sends(Calls.reset)
    test = sends(Calls.test)
    deliveries = pages(Calls.deliveries, Delivery)
    delivery = sends(Calls.delivery)
    redeliver = sends(Calls.redeliver)


class AsyncDestinations(AsyncResource):
    """Destinations: ``client.destinations`` of an :class:`AsyncClient`."""

    list = pages_async(Calls.list, Destination)
    get = sends_async(Calls.get)
    create = sends_async(Calls.create)
    update = sends_async(Calls.update)
    delete = sends_async(Calls.delete)
    rotate_secret = sends_async(Calls.rotate_secret)
    reset = sends_async(Calls.reset)
    test = sends_async(Calls.test)
    deliveries = pages_async(Calls.deliveries, Delivery)
    delivery = sends_async(Calls.delivery)
    redeliver = sends_async(Calls.redeliver)
