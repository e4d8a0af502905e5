"""Keeping a claim's lease while its holder works: renewal on a timer, not a task per claim.

The holder renews every third of ``QUEUE_LEASE_S``, so a live worker never
loses its chunks to the reclaimer however long PostgreSQL takes (a slow
statement, a bisection), and the lease can stay short enough that a dead
process's chunks come back within seconds.  A claim that finishes within the
first third — nearly all of them — costs one timer, never a task.  Renewal
stops when the claim is settled or released, or when it turns out another
worker holds the chunks now (fencing: that worker settles them).

Fencing at the write: a worker commits a transaction only after ``confirm``
says it still holds the claim.  The keeper knows, on this host's clock, a time
before which the lease certainly holds (the send time of the last claim or
renewal that succeeded, plus the lease: Redis set the deadline after that);
within it ``confirm`` costs nothing, past its last third it asks Redis (a
renewal).  A worker whose lease expired — stalled, cut off from Redis — thus
rolls back instead of writing what the chunks' new holder writes.
"""

from __future__ import annotations

import asyncio
import logging
import time

from server.errors import ServiceError
from server.queue.redis_queue import Claim, PointQueue

log = logging.getLogger(__name__)


class LeaseLost(Exception):
    """The claim's chunks are another worker's now: what this one wrote is rolled back."""


class LeaseKeeper:
    def __init__(self, queue: PointQueue, claim: Claim, lease_s: float, *,
                 claimed_at: float | None = None) -> None:
        """``claimed_at``: when the claim was sent (monotonic; default now)."""
        self.queue = queue
        self.claim = claim  # renews whatever chunks the claim holds at the time
        self.lease_s = lease_s
        self.lost = False
        # Before this (monotonic), the lease holds for certain.
        self.held_until = (time.monotonic() if claimed_at is None else claimed_at) + lease_s
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task | None = None
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(lease_s / 3, self._due)

    def _due(self) -> None:
        self._timer = None
        self._task = asyncio.ensure_future(self._renew())

    async def confirm(self) -> bool:
        """Whether the claim is still held, for at least a third of a lease more: at once
        while that is known, else by renewing now (Redis errors propagate)."""
        if self.lost:
            return False
        if time.monotonic() < self.held_until - self.lease_s / 3:
            return True
        sent = time.monotonic()
        held = await self.queue.renew(self.claim, self.lease_s)
        if held < len(self.claim.raw):
            self.lost = True
            return False
        self.held_until = sent + self.lease_s
        return True

    async def _renew(self) -> None:
        sent = time.monotonic()
        try:
            held = await self.queue.renew(self.claim, self.lease_s)
        except ServiceError:
            held = None  # Redis away or full: the lease may lapse; fencing keeps it safe
        except Exception:  # a task boundary: never an unretrieved exception
            log.exception("renewing a lease failed")
            held = None
        if held is not None and held < len(self.claim.raw):
            self.lost = True
            return
        if held is not None:
            self.held_until = sent + self.lease_s
        self._timer = self._loop.call_later(self.lease_s / 3, self._due)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None and not self._task.done():
            self._task.cancel()
