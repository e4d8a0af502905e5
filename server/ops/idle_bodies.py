"""The streamed request bodies still arriving in one process, and the one timer that
cuts the idle ones.

A body that sends no byte for ``HTTP_BODY_IDLE_S`` is cut (408 ``body_idle``).
A timer per request did that at the cost of a timer armed and cancelled on
every POST — most of whose bodies arrive whole with their headers.  Here a
request registers its body (a dict insertion) and deregisters it when read;
one timer, armed only while some body is open, looks at them every quarter of
the idle limit (at most every second): a stalled body is cut between
``HTTP_BODY_IDLE_S`` and that plus a quarter of it (at most a second) after its
last byte.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

log = logging.getLogger(__name__)


class OpenBody(Protocol):
    def cut_if_idle(self, now: float, idle_s: float) -> bool:
        """Cut the body if it has been idle ``idle_s`` at ``now``; True once it is done
        with (cut, or its request finished), to be forgotten."""


class IdleBodies:
    """This process's open bodies; the handlers add and discard, a timer sweeps."""

    def __init__(self, idle_s: float) -> None:
        self.idle_s = idle_s
        self.interval_s = min(1.0, idle_s / 4)
        self._open: dict[OpenBody, None] = {}  # insertion-ordered, hashed by identity
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._open)

    def add(self, body: OpenBody) -> None:
        self._open[body] = None
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.interval_s, self._sweep)

    def discard(self, body: OpenBody) -> None:
        self._open.pop(body, None)

    def _sweep(self) -> None:
        self._timer = None
        now = time.monotonic()
        for body in list(self._open):
            try:
                done = body.cut_if_idle(now, self.idle_s)
            except Exception:  # a bug in one body's cut must not stop the others'
                log.exception("cutting an idle request body failed; it is no longer watched")
                done = True
            if done:
                self._open.pop(body, None)
        if self._open:
            self._timer = asyncio.get_running_loop().call_later(self.interval_s, self._sweep)

    def close(self) -> None:
        """Stop the timer (the loop is ending); the bodies are the connections' to close."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._open.clear()
