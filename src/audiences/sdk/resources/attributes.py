"""``/v1/attributes``: the workspace's attribute schema."""

from __future__ import annotations

from pydantic import TypeAdapter

from audiences.schemas.attributes import AttributeOut
from audiences.sdk._call import Call, endpoint, model
from audiences.sdk._resource import AsyncResource, SyncResource, sends, sends_async

PATH = "/v1/attributes"
_LIST = TypeAdapter(list[AttributeOut])


class Calls:
    """The requests of the attribute resource."""

    @staticmethod
    def list() -> Call[list[AttributeOut]]:
        """Every declared or inferred attribute (one answer: the schema is small)."""
        return Call("GET", PATH, lambda response: _LIST.validate_json(response.content))

    @staticmethod
    def get(name: str) -> Call[AttributeOut]:
        """One attribute."""
        return Call("GET", endpoint(PATH + "/{}", name), model(AttributeOut))

    @staticmethod
    def declare(name: str, type: str, *, description: str | None = None) -> Call[AttributeOut]:
        """Declare an attribute's type (or describe it again; a type never changes: 409)."""
        body = {"type": type, "description": description}
        return Call("PUT", endpoint(PATH + "/{}", name), model(AttributeOut), json=body)


class Attributes(SyncResource):
    """Attributes: ``client.attributes``."""

    list = sends(Calls.list)
    get = sends(Calls.get)
    declare = sends(Calls.declare)


class AsyncAttributes(AsyncResource):
    """Attributes: ``client.attributes`` of an :class:`AsyncClient`."""

    list = sends_async(Calls.list)
    get = sends_async(Calls.get)
    declare = sends_async(Calls.declare)
