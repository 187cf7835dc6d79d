"""The wire contract: pydantic models shared by the API, the SDK and the services."""
