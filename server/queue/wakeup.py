"""Waking idle workers when work arrives: one worker per signal, not all of them.

An ``asyncio.Event`` wakes every waiter: with four idle workers, each enqueue
would send four claims to Redis of which three come back empty — measured on
single-point POSTs, a fair share of the workers' CPU.  Here a signal wakes one
idle worker, and none while a worker is active (claiming, writing, or lingering
to let a trickle gather): that worker claims again soon anyway, and waking
another would only split the trickle into smaller claims.  A signal that finds
no worker waiting is kept, so one that arrives between a worker's empty claim
and its wait is not lost.  ``wake_all`` is for stop and resume.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque


class WakeUp:
    def __init__(self) -> None:
        self._waiters: deque[asyncio.Future] = deque()
        self._pending = False
        self.active = 0  # workers not waiting here: they will claim again on their own

    def set(self) -> None:
        """Wake one idle worker (or the next to wait) — unless one is active."""
        if self.active > 0:
            self._pending = True
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._pending = True

    def wake_all(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
        self._pending = True

    async def wait(self, timeout_s: float) -> None:
        """Return when woken, or after ``timeout_s`` (work from other processes).

        The caller counts as active before and after (``active``), not while here.
        """
        if self._pending:
            self._pending = False
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self.active -= 1
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter, timeout_s)
        finally:
            self.active += 1
            if not waiter.done():
                waiter.cancel()
