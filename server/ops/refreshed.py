"""A value recomputed when older than a caller allows, however many ask at once.

``/ready``'s store probes and ``/metrics``' queue statistics are each asked by
every request or scrape, and each answer costs store round trips.  So the last
value is kept; once it is older than the ``max_age_s`` a caller passes, that
caller starts one computation and every caller meanwhile awaits that same one.
It runs in a task of its own, in an empty context (shared work logs as no
request), awaited through ``asyncio.shield``: a caller that is cancelled
cancels nobody else's answer.  ``compute`` must not raise: a failure is part of its value (a probe
that says "not ok", statistics that are absent).
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Refreshed(Generic[T]):
    def __init__(self, compute: Callable[[], Awaitable[T]]) -> None:
        self._compute = compute
        self._last: tuple[T, float] | None = None  # the last value, its monotonic time
        self._running: asyncio.Task[T] | None = None

    async def get(self, max_age_s: float) -> T:
        if self._last is not None and time.monotonic() - self._last[1] < max_age_s:
            return self._last[0]
        if self._running is None or self._running.done():
            self._running = asyncio.get_running_loop().create_task(
                self._refresh(), context=contextvars.Context())
        return await asyncio.shield(self._running)

    async def _refresh(self) -> T:
        value = await self._compute()
        self._last = value, time.monotonic()
        return value
