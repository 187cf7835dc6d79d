"""One router per resource; handlers parse, call one service, and render. No business logic."""
