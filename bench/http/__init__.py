"""The HTTP benchmark: one or more source trees served side by side, measured through the API."""
