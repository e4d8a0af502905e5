"""Queue workers: claim under a lease, write to PostgreSQL, and only then settle.

``QUEUE_WORKERS`` claim loops run in the server's event loop, beside one
reclaimer (expired leases and due retries back to the queue); both kinds run
under the process's supervisor (``server/supervisor.py``), which the lifecycle
owner hands in: a loop that dies is logged, counted and restarted.  What a
claim's points become is decided in ``settlement.py``; this module only moves
claims:

* a claim is written, and settled (acknowledged, retried, dead-lettered) in
  Redis only after its transactions committed;
* a store outage (``StoreUnavailable``) hands the whole claim back unspent and
  opens that store's circuit breaker (``breaker.py``): workers stop claiming
  until a probe succeeds, at most ~1 s after the store is back;
* anything unexpected hands the claim back and ends the loop, for the
  supervisor to log and restart;
* a worker that lost its lease (it stalled, or lost Redis, past ``QUEUE_LEASE_S``,
  and another worker holds the chunks now) rolls its open transaction back and
  drops the claim: it writes nothing more of it, settles nothing, hands nothing
  back (``lease.py``).

Shutdown follows arq: stop claiming (``stop_claiming``), the supervisor waits
(bounded) for claims in hand and cancels the rest (a cancelled claim is handed
back), then ``wait_detached`` lets settles and hand-backs that outlive their
claim finish.  The lifecycle owner runs those steps, and folds the last
standings deltas after them.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from server import metrics
from server.config import Settings
from server.errors import PoolTimeout, StoreUnavailable, WriteConflict
from server.queue.breaker import CircuitBreaker
from server.queue.chunks import (
    Chunk,
    DeadChunk,
    DeadLetter,
    Settlement,
    chunk_size,
    well_formed,
)
from server.queue.counters import WorkerStats
from server.queue.lease import LeaseKeeper, LeaseLost
from server.queue.redis_queue import RECLAIM_LIMIT, Claim, PointQueue, handbacks_of
from server.queue.settlement import ClaimWriter
from server.queue.strategy import IngestStrategy
from server.storage.database import Database
from server.storage.standings import StandingsFolder
from server.supervisor import Supervisor

log = logging.getLogger(__name__)
T = TypeVar("T")

IDLE_POLL_S = 0.05  # idle workers also wake on local enqueue, so this bounds cross-process lag
LINGER_S = 0.02  # after a claim of under a tenth of QUEUE_BATCH_SIZE (not on the naive path)
RECLAIM_INTERVAL_S = 0.25


class Workers:
    """The claim loops and the reclaimer of one process, run under its supervisor.

    ``folder`` is used by ``drain`` only (burst mode folds what it wrote); the
    standings folder's own task is the lifecycle owner's.
    """

    def __init__(self, queue: PointQueue, db: Database, strategy: IngestStrategy,
                 settings: Settings, supervisor: Supervisor, folder: StandingsFolder) -> None:
        self.queue = queue
        self.db = db  # the workers' own pool, never the request handlers'
        self.strategy = strategy
        self.settings = settings
        self.stats = WorkerStats()
        self.writer = ClaimWriter(db, strategy, settings, self.stats)
        self.folder = folder
        self.supervisor = supervisor
        self.busy: dict[int, float] = {}  # worker index -> claim start (monotonic)
        self.leases: dict[int, LeaseKeeper] = {}  # worker index -> its claim's lease
        self._claim_size: dict[int, int] = {}  # worker index -> points to ask next
        self.stopping = False
        self._pending: set[asyncio.Future] = set()  # detached settles and releases
        self.postgres_breaker = CircuitBreaker("postgres")
        self.redis_breaker = CircuitBreaker("redis")

    # --- lifecycle -------------------------------------------------------------

    def start(self, count: int) -> None:
        """Run ``count`` claim loops and the reclaimer under the supervisor; tasks already
        running are left as they are, so a test may start workers on a service."""
        self.stopping = False
        tasks: dict[str, Callable[[], Awaitable[None]]] = {
            f"worker-{index}": functools.partial(self.run, index) for index in range(count)}
        tasks["reclaimer"] = self.reclaim_forever
        for name, factory in tasks.items():
            if not self.supervisor.has(name):
                self.supervisor.start(name, factory)

    def stop_claiming(self) -> None:
        """Claim no more: each loop finishes the claim in hand and ends (the supervisor
        waits for them, bounded, and cancels what is left)."""
        self.stopping = True
        self.queue.wakeup.wake_all()

    async def wait_detached(self, timeout_s: float) -> None:
        """Wait (at most ``timeout_s``) for settles and hand-backs that outlive their
        claim, before the connections they need are closed."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=max(0.1, timeout_s))

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
        self.queue.wakeup.active += 1
        try:
            await self._claim_loop(index)
        finally:
            self.queue.wakeup.active -= 1

    async def _claim_loop(self, index: int) -> None:
        stop = self.supervisor.stop_signal
        while not self.stopping:
            handled = 0  # points claimed
            pg_probe = redis_probe = False
            try:
                pg_probe = await self.postgres_breaker.wait_ready(stop)
                redis_probe = await self.redis_breaker.wait_ready(stop)
                if self.stopping:
                    break
                handled = await self.work_once(index)
            except StoreUnavailable as exc:  # Redis, while claiming or settling
                self._store_failed(exc)
            finally:
                # A probe this worker holds must not stay held, whatever happened
                # (a stop included: the other loops would wait for it forever).
                if pg_probe:
                    self.postgres_breaker.release_probe()
                if redis_probe:
                    self.redis_breaker.release_probe()
            if self.stopping:
                break
            if not handled:
                await self.queue.wakeup.wait(IDLE_POLL_S)
            elif handled < self.strategy.claim_points // 10:
                # A trickle: let a few more points gather, so that each claim, insert
                # and settle carries more than a handful (20 ms of lag at most).
                await asyncio.sleep(LINGER_S)

    async def reclaim_due(self) -> int:
        """Return every expired lease and due retry to the queue now (in calls of
        ``RECLAIM_LIMIT``, as many as it takes); return how many chunks moved."""
        moved = 0
        while True:
            expired, due = await self.queue.reclaim()
            moved += expired + due
            if max(expired, due) < RECLAIM_LIMIT:
                return moved

    async def reclaim_forever(self) -> None:
        """Reclaim every ``RECLAIM_INTERVAL_S``; a Redis outage only pauses it."""
        failing = False
        while not (self.stopping or self.supervisor.stopping):
            try:
                await self.reclaim_due()
                failing = False
            except StoreUnavailable as exc:
                if not failing:
                    log.warning("reclaimer waits for Redis: %s", exc)
                failing = True
            await self.supervisor.stop_signal.pause(RECLAIM_INTERVAL_S)

    async def drain(self) -> int:
        """Burst mode: claim and write until nothing is ready; return points committed.

        Makes worker tests deterministic (no timing), like arq's ``burst``.
        """
        before = self.stats.points_committed
        await self.reclaim_due()
        while await self.work_once(0):
            pass
        await self.folder.fold_once()
        return self.stats.points_committed - before

    # --- one claim ---------------------------------------------------------------

    async def work_once(self, index: int) -> int:
        """Claim once and see the claim through; the points claimed (0: none).

        Under a backlog claims grow (×2 per full claim, up to ``max_claim_factor``):
        a bigger group costs PostgreSQL less per point — fewer standings deltas,
        one statement — and the backlog's lag is the backlog's anyway.
        """
        asked = self._claim_size.get(index, self.strategy.claim_points)
        claimed_at = time.monotonic()
        claim = await self.queue.claim(asked, self.settings.queue_lease_s)
        self.redis_breaker.record_success()
        if not claim:
            self._claim_size[index] = self.strategy.claim_points
            return 0
        claimed = sum(chunk_size(chunk_id) for chunk_id in claim.ids)
        most = self.strategy.claim_points * self.strategy.max_claim_factor
        self._claim_size[index] = (min(most, asked * 2) if claimed >= asked
                                   else self.strategy.claim_points)
        self.stats.claims += 1
        metrics.CLAIM_SIZE.observe(claimed)
        self.busy[index] = time.monotonic()
        lease = LeaseKeeper(self.queue, claim, self.settings.queue_lease_s,
                            claimed_at=claimed_at)
        self.leases[index] = lease
        try:
            try:
                outcome = await self._see_through(claim, lease)
            except LeaseLost:  # another worker holds the chunks: it writes and settles them
                self.stats.leases_lost += 1
                log.warning("lease of %d chunk(s) lost while writing; rolled back, left to "
                            "their new holder", len(claim.raw))
                return claimed
            except StoreUnavailable as exc:
                self.stats.handbacks += 1
                self._store_failed(exc)
                log.warning("%s; handing back %d chunk(s)", exc, len(claim.raw))
                await self._detached(self.queue.release(claim))  # never strand the leases
                return claimed
            except BaseException as exc:
                self.stats.handbacks += 1
                # Unexpected errors count against the chunks (a bound stops a loop);
                # a cancellation (shutdown) is no fault of theirs.
                error = f"{type(exc).__name__}: {exc}" if isinstance(exc, Exception) else None
                await self._detached(self.queue.release(claim, error=error))
                raise
            finally:
                self.busy.pop(index, None)
            await self._detached(self._settle(claim, outcome))
        finally:
            lease.stop()
            if self.leases.get(index) is lease:
                del self.leases[index]
        return claimed

    async def _settle(self, claim: Claim, outcome: Settlement) -> None:
        """Apply the settlement; a Redis failure is retried while the lease lasts."""
        if not (outcome.acked or outcome.retries or outcome.dead):
            return  # everything was handed back already
        give_up = time.monotonic() + self.settings.queue_lease_s
        while True:
            try:
                settled = await self.queue.settle(claim, outcome)
                break
            except StoreUnavailable as exc:
                if time.monotonic() > give_up:
                    raise  # the lease is gone: the chunks are redelivered, harmlessly
                self._store_failed(exc)
                await asyncio.sleep(0.2)
        if not settled:
            self.stats.leases_lost += 1
            log.warning("lease of %d chunk(s) lost before settling; their new holder "
                        "settles them", len(claim.raw))

    async def _detached(self, work: Awaitable[T]) -> T:
        """Run ``work`` so that cancelling the caller (shutdown) cannot cut it half-way;
        ``stop`` waits for such work before the connections close."""
        task = asyncio.ensure_future(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return await asyncio.shield(task)

    async def _see_through(self, claim: Claim, lease: LeaseKeeper) -> Settlement:
        """Decode the claim, give up on chunks handed back too often, write the rest."""
        chunks: list[Chunk] = []
        given_up: list[DeadLetter | DeadChunk] = []
        undecodable: list[tuple[str, str]] = []  # (chunk id, error)
        limit = self.settings.queue_max_handbacks
        now_ms = time.time_ns() // 1_000_000
        for index, (chunk_id, payload, record) in enumerate(claim.raw):
            if index:  # decoding a chunk of 1,000 points is ~0.4 ms: let go between
                await asyncio.sleep(0)
            handbacks, last_error = handbacks_of(record)
            try:
                chunk = Chunk.from_payload(chunk_id, payload)
            except (ValueError, TypeError, KeyError, IndexError) as exc:
                error = f"cannot decode the chunk: {type(exc).__name__}: {exc}"
                if handbacks + 1 < limit:
                    undecodable.append((chunk_id, error))
                    continue
                given_up.append(DeadChunk(chunk_id, payload, "undecodable", handbacks + 1,
                                          now_ms, error))
                self.stats.given_up += 1
                continue
            lost = claim.lost.get(chunk_id, 0)
            if handbacks >= limit or lost >= limit:  # it keeps failing or killing: stop
                if handbacks >= limit:
                    reason, count = "unexpected_error", handbacks
                    error = f"handed back {handbacks} times; last: {last_error}"
                else:  # its holders died (or stalled) with it in hand, one after another
                    reason, count = "crashed_holder", lost
                    error = (f"{lost} holders lost their lease on this chunk (died or "
                             f"stalled with it in hand)")
                if all(map(well_formed, chunk.points)):
                    given_up += [DeadLetter(point, reason, count, now_ms, now_ms, error)
                                 for point in chunk.points]
                else:  # no point to list or requeue: keep the chunk as it came
                    given_up.append(DeadChunk(chunk_id, payload, reason, count, now_ms, error))
                self.stats.given_up += 1
                continue
            chunks.append(chunk)
        for chunk_id, error in undecodable:  # a counted handback; the others go on
            log.error("chunk %s: %s; handing it back", chunk_id, error)
            await self.queue.release(claim.subset([chunk_id]), error=error)
        released = {chunk_id for chunk_id, _ in undecodable}
        claim.raw[:] = [entry for entry in claim.raw if entry[0] not in released]
        outcome = Settlement()
        if chunks:
            outcome = await self.writer.write(chunks, lease.confirm)
            self.postgres_breaker.record_success()
        outcome.acked = claim.ids  # the written and the given-up ones
        outcome.dead += given_up
        return outcome

    def _store_failed(self, exc: StoreUnavailable) -> None:
        """Open the failing store's breaker; a local pool wait, or a transaction
        PostgreSQL aborted to break a conflict, is not the store failing."""
        if isinstance(exc, PoolTimeout | WriteConflict):
            return
        breaker = self.redis_breaker if exc.store == "redis" else self.postgres_breaker
        if breaker.failures == 0:  # once per outage, not once per worker per retry
            log.warning("workers wait for %s: %s", exc.store, exc)  # with the driver's text
        breaker.record_failure(str(exc))  # shown to admins only (/ready's details)


def _index(name: str) -> int:
    suffix = name.rsplit("-", 1)[-1]
    return int(suffix) if name.startswith("worker-") and suffix.isdigit() else -1
