"""The REST API: FastAPI app, conventions (auth, lists, errors, preconditions) and thin routes."""
