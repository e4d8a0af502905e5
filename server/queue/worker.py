"""Queue workers: claim under a lease, write to PostgreSQL, and only then settle.

``QUEUE_WORKERS`` claim loops run in the server's event loop, beside one
reclaimer (expired leases and due retries back to the queue) and the standings
folder; all of them are supervised (``server/supervisor.py``): a loop that dies
is logged, counted and restarted.  What a claim's points become is decided in
``settlement.py``; this module only moves claims:

* a claim is written, and settled (acknowledged, retried, dead-lettered) in
  Redis only after its transactions committed;
* a store outage (``StoreUnavailable``) hands the whole claim back unspent and
  opens that store's circuit breaker (``breaker.py``): workers stop claiming
  until a probe succeeds, at most ~1 s after the store is back;
* anything unexpected hands the claim back and ends the loop, for the
  supervisor to log and restart.

Shutdown follows arq: stop claiming, wait (bounded) for claims in hand, cancel
(a cancelled claim is handed back), then fold the last standings deltas.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from typing import Any

from server.config import Settings
from server.errors import PoolTimeout, StoreUnavailable
from server.queue.breaker import CircuitBreaker
from server.queue.counters import WorkerStats
from server.queue.paths import IngestPath
from server.queue.redis_queue import RECLAIM_LIMIT, PointQueue
from server.queue.settlement import ClaimWriter
from server.storage.database import Database
from server.storage.standings import StandingsFolder
from server.supervisor import Supervisor

log = logging.getLogger(__name__)

IDLE_POLL_S = 0.05  # idle workers also wake on local enqueue, so this bounds cross-process lag
RECLAIM_INTERVAL_S = 0.25


class Workers:
    """The background tasks of one process: claim loops, reclaimer, standings folder."""

    def __init__(self, queue: PointQueue, db: Database, path: IngestPath,
                 settings: Settings, supervisor: Supervisor | None = None) -> None:
        self.queue = queue
        self.path = path
        self.settings = settings
        self.stats = WorkerStats()
        self.writer = ClaimWriter(db, path, settings, self.stats)
        self.folder = StandingsFolder(db)
        self.supervisor = supervisor or Supervisor()
        self.busy: dict[int, float] = {}  # worker index -> claim start (monotonic)
        self.stopping = False
        self.postgres_breaker = CircuitBreaker("postgres")
        self.redis_breaker = CircuitBreaker("redis")

    # --- lifecycle -------------------------------------------------------------

    def start(self, count: int) -> None:
        """Run ``count`` claim loops (plus the reclaimer and folder); tasks already
        running are left as they are, so a test may start workers on a service."""
        self.stopping = False
        tasks = {f"worker-{index}": functools.partial(self.run, index) for index in range(count)}
        tasks["reclaimer"] = self.reclaim_forever
        tasks["folder"] = functools.partial(self.folder.run, lambda: self.stopping)
        for name, factory in tasks.items():
            if not self.supervisor.has(name):
                self.supervisor.start(name, factory)

    async def stop(self, timeout_s: float) -> None:
        """Stop claiming, let claims in hand finish (bounded), then cancel the rest."""
        self.stopping = True
        self.queue.wakeup.set()
        await self.supervisor.stop(timeout_s)
        try:
            await asyncio.wait_for(self.folder.fold_once(), max(0.1, timeout_s))
        except (StoreUnavailable, TimeoutError) as exc:  # the log waits for the next start
            log.warning("final standings fold skipped: %s", exc)

    def describe(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        tasks = self.supervisor.describe()
        for task in tasks:
            index = _index(task["name"])
            task["busy_s"] = round(now - self.busy[index], 3) if index in self.busy else None
        return tasks

    # --- loops -----------------------------------------------------------------

    async def run(self, index: int) -> None:
        """One claim loop; ends when stopping, or by an unexpected error (supervised)."""
        while not self.stopping:
            handled = False
            await self.postgres_breaker.wait_ready()
            await self.redis_breaker.wait_ready()
            if self.stopping:
                break
            try:
                handled = await self.work_once(index)
            except StoreUnavailable as exc:  # Redis, while claiming or settling
                self._store_failed(exc)
            finally:
                # Whatever happened, a probe this worker held must not stay held.
                self.postgres_breaker.release_probe()
                self.redis_breaker.release_probe()
            if not handled and not self.stopping:
                self.queue.wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.queue.wakeup.wait(), IDLE_POLL_S)

    async def reclaim_forever(self) -> None:
        """Return expired leases and due retries to the queue; loop at once while busy."""
        failing = False
        while not self.stopping:
            busy = False
            try:
                expired, due = await self.queue.reclaim()
                busy = max(expired, due) >= RECLAIM_LIMIT
                failing = False
            except StoreUnavailable as exc:
                if not failing:
                    log.warning("reclaimer waits for Redis: %s", exc)
                failing = True
            if not busy:
                await asyncio.sleep(RECLAIM_INTERVAL_S)

    async def drain(self) -> int:
        """Burst mode: claim and write until nothing is ready; return points committed.

        Makes worker tests deterministic (no timing), like arq's ``burst``.
        """
        before = self.stats.points_committed
        await self.queue.reclaim()
        while await self.work_once(0):
            pass
        await self.folder.fold_once()
        return self.stats.points_committed - before

    # --- one claim ---------------------------------------------------------------

    async def work_once(self, index: int) -> bool:
        """Claim once and see the claim through; False when nothing was claimed."""
        chunks = await self.queue.claim(self.path.claim_points, self.settings.queue_lease_s)
        self.redis_breaker.record_success()
        if not chunks:
            self.postgres_breaker.release_probe()
            return False
        self.stats.claims += 1
        self.busy[index] = time.monotonic()
        ids = [c.id for c in chunks]
        try:
            outcome = await self.writer.write(chunks)
        except StoreUnavailable as exc:
            self.stats.handbacks += 1
            self._store_failed(exc)
            log.warning("%s; handing back %d chunk(s)", exc, len(chunks))
            # Shielded: a cancel during shutdown must not strand the leases.
            await asyncio.shield(self.queue.release(ids))
            return True
        except BaseException:
            self.stats.handbacks += 1
            await asyncio.shield(self.queue.release(ids))
            raise
        finally:
            self.busy.pop(index, None)
        self.postgres_breaker.record_success()
        await asyncio.shield(self.queue.settle(outcome))
        return True

    def _store_failed(self, exc: StoreUnavailable) -> None:
        """Open the failing store's breaker; a local pool wait is not the store failing."""
        if isinstance(exc, PoolTimeout):
            return
        breaker = self.redis_breaker if exc.store == "redis" else self.postgres_breaker
        if breaker.failures == 0:  # once per outage, not once per worker per retry
            log.warning("workers wait for %s: %s", exc.store, exc.message)
        breaker.record_failure(exc.message)


def _index(name: str) -> int:
    suffix = name.rsplit("-", 1)[-1]
    return int(suffix) if name.startswith("worker-") and suffix.isdigit() else -1
