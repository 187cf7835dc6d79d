"""Loggers that keep user data out of server logs: an exception is logged with its traceback
but without its message, which may quote a row of an upload, a profile or a query parameter."""

from __future__ import annotations

import logging
import traceback

REDACTED = "<message withheld: it may hold user data>"


class RedactExceptions(logging.Filter):
    """Replaces a record's exception by its traceback with every message withheld (types,
    files and lines kept), whatever handler or formatter prints it later."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the record's exception, if it has one; never drops a record."""
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redacted_traceback(record.exc_info[1])
            record.exc_info = None
        return True


def redacted_traceback(error: BaseException) -> str:
    """``error``'s traceback, its causes included, with each exception's message withheld.

    >>> try:
    ...     int("secret")
    ... except ValueError as exc:
    ...     print(redacted_traceback(exc).splitlines()[-1])
    ValueError: <message withheld: it may hold user data>
    """
    lines: list[str] = []
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    for index, item in enumerate(reversed(chain)):
        if index:
            lines.append("\nThe above exception led to the following one:\n\n")
        lines.append("Traceback (most recent call last):\n")
        lines.extend(traceback.format_tb(item.__traceback__))
        lines.append(f"{_type_name(item)}: {REDACTED}\n")
    return "".join(lines).rstrip("\n")


def _type_name(error: BaseException) -> str:
    kind = type(error)
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )


def get_logger(name: str) -> logging.Logger:
    """The logger ``name``, with :class:`RedactExceptions` on it (once)."""
    log = logging.getLogger(name)
    if not any(isinstance(item, RedactExceptions) for item in log.filters):
        log.addFilter(RedactExceptions())
    return log
