"""A per-store circuit breaker: closed → open → half-open → closed.

When a store fails, workers stop hammering it: the breaker opens for a cool-down
that doubles with each consecutive failure (``base_s`` … ``max_s``), then lets a
single probe through (half-open).  A success closes it; a failure opens it again.
``max_s`` stays at 1 s so that draining resumes within about a second of the
store's return (the promise: within 2 s).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from server.errors import (
    CommandRefused,
    PoolTimeout,
    ReplicasShort,
    StoreUnavailable,
    WriteConflict,
)
from server.supervisor import StopSignal

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
_NAMES = {"redis": "Redis", "postgres": "PostgreSQL"}


def is_store_failure(exc: BaseException) -> bool:
    """Whether ``exc`` says the store itself is failing: what opens its breaker on the
    request path.  A local pool wait, a transaction aborted to break a conflict, a
    command the store refused, an enqueue too few replicas confirmed: the store
    answered (or was never asked)."""
    return isinstance(exc, StoreUnavailable) and not isinstance(
        exc, PoolTimeout | WriteConflict | CommandRefused | ReplicasShort)


class CircuitBreaker:
    def __init__(self, name: str, *, base_s: float = 0.05, max_s: float = 1.0) -> None:
        self.name = name
        self.base_s = base_s
        self.max_s = max_s
        self.failures = 0  # consecutive
        self.opened_total = 0
        self._open_until = 0.0
        self._probing = False
        self.last_error: str | None = None

    @property
    def state(self) -> str:
        if self.failures == 0:
            return CLOSED
        if time.monotonic() < self._open_until or self._probing:
            return OPEN if not self._probing else HALF_OPEN
        return HALF_OPEN

    async def wait_ready(self, stop: StopSignal | None = None) -> bool:
        """Return when a call may go through: closed (False), or this caller is now the
        one probe of a half-open breaker (True: it must record an outcome, or
        ``release_probe``).  Also returns (False) as soon as ``stop`` is raised: a
        stop never waits out a cool-down."""
        while self.failures:
            if stop is not None and stop.requested:
                return False
            remaining = self._open_until - time.monotonic()
            if remaining <= 0 and not self._probing:
                self._probing = True
                return True
            wait_s = max(remaining, 0.02)
            await (stop.pause(wait_s) if stop is not None else asyncio.sleep(wait_s))
        return False

    def try_pass(self) -> bool | None:
        """``wait_ready`` for the request path, which never waits: None while closed
        (go ahead), False while open or while another caller probes (fall back at
        once), True when this caller has just become the probe of a half-open
        breaker (it must record an outcome, or ``release_probe``)."""
        if not self.failures:
            return None
        if time.monotonic() < self._open_until or self._probing:
            return False
        self._probing = True
        return True

    def refused(self) -> StoreUnavailable:
        """What a caller the open breaker turns away (``try_pass`` gave False) raises."""
        return StoreUnavailable(self.name, f"{_NAMES.get(self.name, self.name)} is "
                                "unavailable (its circuit breaker is open)",
                                reason=self.last_error)

    def tell(self, probe: bool | None, error: BaseException | None = None) -> None:
        """How a call ``try_pass`` let through ended (``probe``: what it returned).
        Success closes the breaker when the call was its probe; a store failure
        (``is_store_failure``) opens it; anything else only lets the next caller probe.
        """
        if error is not None and is_store_failure(error):
            self.record_failure(getattr(error, "message", str(error)))
        elif probe and error is None:
            self.record_success()
        elif probe:
            self.release_probe()

    def release_probe(self) -> None:
        """The probe had nothing to try the store with; let the next caller probe.

        Only the caller that holds the probe (``wait_ready`` returned True) calls it.
        """
        self._probing = False

    def record_success(self) -> None:
        self.failures = 0
        self._probing = False
        self.last_error = None

    def record_failure(self, error: str) -> None:
        if self.failures == 0:
            self.opened_total += 1
        self.failures += 1
        self._probing = False
        self.last_error = error[:200]
        cool_down = min(self.max_s, self.base_s * 2 ** min(self.failures - 1, 20))
        self._open_until = time.monotonic() + cool_down

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state, "consecutive_failures": self.failures,
                "times_opened": self.opened_total, "last_error": self.last_error}
