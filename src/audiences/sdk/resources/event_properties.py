"""``/v1/event-properties``: the workspace's event property schema (one type per name across
every event name)."""

from __future__ import annotations

from pydantic import TypeAdapter

from audiences.schemas.events import EventPropertyOut
from audiences.sdk._call import Call, endpoint, model
from audiences.sdk._resource import AsyncResource, SyncResource, sends, sends_async

PATH = "/v1/event-properties"
_LIST = TypeAdapter(list[EventPropertyOut])


class Calls:
    """The requests of the event property resource."""

    @staticmethod
    def list() -> Call[list[EventPropertyOut]]:
        """Every declared or inferred event property (one answer: at most 500)."""
        return Call("GET", PATH, lambda response: _LIST.validate_json(response.content))

    @staticmethod
    def get(name: str) -> Call[EventPropertyOut]:
        """One event property."""
        return Call("GET", endpoint(PATH + "/{}", name), model(EventPropertyOut))

    @staticmethod
    def declare(name: str, type: str, *, description: str | None = None) -> Call[EventPropertyOut]:
        """Declare an event property's type (or describe it again; a type never changes: 409)."""
        body = {"type": type, "description": description}
        return Call("PUT", endpoint(PATH + "/{}", name), model(EventPropertyOut), json=body)


class EventProperties(SyncResource):
    """Event properties: ``client.event_properties``."""

    list = sends(Calls.list)
    get = sends(Calls.get)
    declare = sends(Calls.declare)


class AsyncEventProperties(AsyncResource):
    """Event properties: ``client.event_properties`` of an :class:`AsyncClient`."""

    list = sends_async(Calls.list)
    get = sends_async(Calls.get)
    declare = sends_async(Calls.declare)
