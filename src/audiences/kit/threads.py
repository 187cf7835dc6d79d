"""How long a thread may hold the interpreter before a waiting thread gets its turn.

A server process runs threads that mostly wait on sockets (a webhook's sending line, request
handlers) beside threads that compute (a delivery run making its next messages, an
evaluation). When a waiting thread's answer arrives it needs the interpreter lock, which a
computing thread gives up only every switch interval: Python's default, 5 ms, is longer than
a local receiver takes to answer a 1,000-change message (~3 ms), so the sending line sat idle
behind the run that feeds it. At 1 ms the delivery benchmark went from 0.58x to 0.66-0.68x of
a bare HTTP client on a quiet machine (``bench/README.md``, "Webhook deliveries"), with no
more CPU a message.
"""

from __future__ import annotations

import sys

SWITCH_INTERVAL_SECONDS = 0.001
"""The longest a thread holds the interpreter while another waits for it."""


def shorten_thread_switches() -> None:
    """Let a thread whose I/O has finished take the interpreter within
    :data:`SWITCH_INTERVAL_SECONDS`; call it once, when a server or worker process starts."""
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
