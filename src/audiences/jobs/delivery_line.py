"""A destination's sending line: a thread that sends the messages it is handed one after
another, in the order handed, while the delivery job records earlier outcomes and reads or
builds the next messages (the database work overlaps the receiver's answer).

One message is in flight at a time, so a destination's order holds; the first that fails
halts the line, and those handed after it are dropped unsent (they stay pending in the
database, behind the failed one), until the job, having recorded the failure, hands the line
messages read afresh from the destination's head.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime

from audiences.kit.clock import utcnow
from audiences.services.delivery_sends import Send, Sent
from audiences.services.senders import Outcome


class Line:
    """The sending thread of one delivery run; ``attempt`` makes one attempt of one message."""

    def __init__(self, attempt: Callable[[Send], Outcome]) -> None:
        self._attempt = attempt
        self._changed = threading.Condition()
        self._todo: deque[Send] = deque()
        self._done: list[Sent] = []
        self._busy: Send | None = None
        self._halted = False
        self._closing = False
        self._until: datetime | None = None
        self._wake_at: int | None = None
        """What :meth:`take` waits for (at most that many handed), while it waits: the line
        wakes it only then, not at each message (each wake-up takes the interpreter from the
        line)."""
        self._thread = threading.Thread(target=self._run, name="delivery-line", daemon=True)
        self._thread.start()

    def put(self, sends: list[Send], *, fresh: bool) -> None:
        """Queue ``sends`` behind those handed before. ``fresh``: they were read from the
        destination's head with the line idle, which clears a halt; otherwise, on a halted
        line, they are dropped (they come after the message that failed)."""
        with self._changed:
            if fresh:
                self._halted = False
            if not self._halted:
                self._todo.extend(sends)
                self._changed.notify_all()

    def hold_until(self, until: datetime) -> None:
        """Start no attempt at or after ``until`` (the run's lease on the destination, less
        the time an answer may take): past it, what is queued is dropped as by a halt, since
        another run may have the destination by then. The run moves it on each renewal."""
        with self._changed:
            self._until = until

    def halt(self) -> None:
        """Drop the messages queued (the one in flight finishes) and take no more until a
        fresh :meth:`put`: the destination was turned off."""
        with self._changed:
            self._halted = True
            self._todo.clear()
            self._changed.notify_all()

    def waiting(self) -> int:
        """Messages handed and not yet finished (queued or in flight)."""
        with self._changed:
            return len(self._todo) + int(self._busy is not None)

    def idle(self) -> bool:
        """Nothing queued, nothing in flight, and every outcome taken."""
        with self._changed:
            return not (self._todo or self._busy or self._done)

    def first(self) -> int | None:
        """The lowest ``seq`` handed whose outcome was not taken yet (finished and not taken,
        in flight, or queued); None when there is none. Every message handed before it has
        had its outcome taken."""
        with self._changed:
            handed = [one.send for one in self._done[:1]]
            handed += [self._busy] if self._busy is not None else []
            handed += list(self._todo)[:1]
            return min((one.seq for one in handed), default=None)

    def take(self, *, leaving: int | None = None, timeout: float = 0.0) -> list[Sent]:
        """The attempts finished since the last take, oldest first; with ``leaving``, first
        waits (at most ``timeout`` seconds) until at most that many messages are queued or
        in flight."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while leaving is not None and len(self._todo) + int(self._busy is not None) > leaving:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._wake_at = leaving
                self._changed.wait(left)
            self._wake_at = None
            done, self._done = self._done, []
            return done

    def close(self) -> list[Sent]:
        """Stop: the message in flight finishes, those queued are dropped; the attempts not
        taken yet."""
        with self._changed:
            self._closing = True
            self._todo.clear()
            self._changed.notify_all()
        self._thread.join()
        return self.take()

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._todo and not self._closing:
                    self._changed.wait()
                if self._closing:
                    return
                if self._until is not None and utcnow() >= self._until:
                    self._halted = True
                    self._todo.clear()
                    self._changed.notify_all()
                    continue
                send = self._todo.popleft()
                self._busy = send
            started = utcnow()
            try:
                outcome = self._attempt(send)
            except Exception as exc:  # never leave the job waiting on a dead thread
                outcome = Outcome(False, None, 0, error=f"{type(exc).__name__}: {exc}"[:500])
            with self._changed:
                self._busy = None
                self._done.append(Sent(send, outcome, started, utcnow()))
                if not outcome.ok:
                    self._halted = True
                    self._todo.clear()
                if self._wake_at is not None and len(self._todo) <= self._wake_at:
                    self._changed.notify_all()
