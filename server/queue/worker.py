"""Queue workers: claim under a lease, write to PostgreSQL, and only then settle.

``QUEUE_WORKERS`` tasks run in the server's event loop, plus one reclaimer task.
Per claim, points are written in groups of ``path.commit_points``; each group is
one transaction holding one reference-check query and one idempotent insert that
also logs the inserted rows' standings deltas (a folder task moves them into
standings every ``FOLD_INTERVAL_S``, see migration 0002).  The group's outcome:

* committed — acknowledged with the claim;
* unknown competition/participant — retried with backoff (registration may lag
  behind scoring), dead-lettered after ``QUEUE_MAX_ATTEMPTS``;
* a data error from PostgreSQL — the group is bisected until the poison point is
  alone; it is dead-lettered and its group-mates commit;
* a transient store error — the whole claim is handed back unspent and the
  store's circuit breaker opens (``breaker.py``): workers stop claiming until a
  probe succeeds, at most ~1 s after the store is back.

Shutdown follows arq: stop claiming, wait (bounded) for claims in hand, cancel,
and hand back anything still leased.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg2

from server.config import Settings
from server.errors import Unavailable
from server.queue.breaker import CircuitBreaker
from server.queue.paths import IngestPath
from server.queue.redis_queue import (
    REDIS_ERRORS,
    Chunk,
    PointQueue,
    Settlement,
    new_chunk_ids,
)
from server.storage import points as sql
from server.storage.database import TRANSIENT_ERRORS, Database

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
IDLE_POLL_S = 0.05  # idle workers also wake on local enqueue, so this bounds cross-process lag
RECLAIM_INTERVAL_S = 0.25
FOLD_INTERVAL_S = 0.2  # standings lag commits by at most about this
FOLD_LIMIT = 50_000
PERMANENT_REASONS = ("data_error", "invalid_value")  # retrying cannot help: dead-letter now
MAX_BACKOFF_S = 1.0  # after an unexpected error


def backoff_s(attempt: int, base_s: float, max_s: float) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(max, base·2^attempt)]."""
    return random.uniform(0, min(max_s, base_s * (2 ** min(attempt, 32))))


@dataclass
class WorkerStats:
    """Counters that /ready, /v1/admin/queue and tests read."""

    claims: int = 0
    points_committed: int = 0
    points_duplicate: int = 0
    points_retried: int = 0
    points_dead: int = 0
    handbacks: int = 0
    batch_sizes: deque[int] = field(default_factory=lambda: deque(maxlen=100))  # recent groups

    def as_dict(self) -> dict[str, int]:
        return {"claims": self.claims, "points_committed": self.points_committed,
                "points_duplicate": self.points_duplicate,
                "points_retried": self.points_retried, "points_dead": self.points_dead,
                "handbacks": self.handbacks}


class StoreUnavailable(Exception):
    """A transient store error; the claim goes back unspent."""


class Workers:
    """The worker tasks of one process and the logic they share."""

    def __init__(self, queue: PointQueue, db: Database, path: IngestPath,
                 settings: Settings) -> None:
        self.queue = queue
        self.db = db
        self.path = path
        self.settings = settings
        self.stats = WorkerStats()
        self.busy: dict[int, float] = {}  # worker index -> claim start (monotonic)
        self._tasks: dict[str, asyncio.Task] = {}
        self._stopping = False
        self.postgres_breaker = CircuitBreaker("postgres")
        self.redis_breaker = CircuitBreaker("redis")

    # --- lifecycle -------------------------------------------------------------

    def start(self, count: int) -> None:
        self._stopping = False
        for index in range(count):
            self._tasks[f"worker-{index}"] = asyncio.create_task(self._run(index))
        self._tasks["reclaimer"] = asyncio.create_task(self._reclaim_forever())
        self._tasks["folder"] = asyncio.create_task(self._fold_forever())

    async def stop(self, timeout_s: float) -> None:
        """Stop claiming, let claims in hand finish (bounded), then cancel the rest."""
        self._stopping = True
        self.queue.wakeup.set()
        tasks = list(self._tasks.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        try:
            await asyncio.wait_for(self.fold_once(), max(0.1, timeout_s))
        except Exception as exc:  # PostgreSQL away: the log waits for the next start
            log.warning("final standings fold skipped: %s", exc)

    def describe(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [{"name": name, "running": not task.done(),
                 "busy_s": round(now - self.busy[i], 3) if (i := _index(name)) in self.busy
                 else None}
                for name, task in self._tasks.items()]

    # --- loops -----------------------------------------------------------------

    async def _run(self, index: int) -> None:
        while not self._stopping:
            handled = False
            try:
                await self.postgres_breaker.wait_ready()
                await self.redis_breaker.wait_ready()
                if self._stopping:
                    break
                try:
                    handled = await self.work_once(index)
                finally:
                    # Whatever happened, a probe this worker held must not stay held.
                    self.postgres_breaker.release_probe()
                    self.redis_breaker.release_probe()
            except asyncio.CancelledError:
                raise
            except REDIS_ERRORS as exc:
                self.redis_breaker.record_failure(f"{type(exc).__name__}: {exc}")
                log.warning("worker %d: Redis unavailable: %s", index, exc)
            except Exception:  # task boundary: log and keep the worker alive
                log.exception("worker %d failed; continuing", index)
                await asyncio.sleep(MAX_BACKOFF_S)
            if not handled and not self._stopping:
                self.queue.wakeup.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.queue.wakeup.wait(), IDLE_POLL_S)

    async def _reclaim_forever(self) -> None:
        while not self._stopping:
            try:
                await self.queue.reclaim()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # task boundary
                log.warning("reclaim failed: %s", exc)
            await asyncio.sleep(RECLAIM_INTERVAL_S)

    async def _fold_forever(self) -> None:
        failing = False
        while not self._stopping:
            try:
                await self.fold_once()
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # task boundary; the log is folded next time
                if not failing:  # once per outage, not five times a second
                    log.warning("standings fold failed (will retry): %s", exc)
                failing = True
            await asyncio.sleep(MAX_BACKOFF_S if failing else FOLD_INTERVAL_S)

    async def fold_once(self) -> int:
        """Fold every logged standings delta into standings; return how many."""
        total = 0
        while True:
            async with self.db.cursor() as cur:  # one statement: its own transaction
                folded = await sql.fold_standings(cur, FOLD_LIMIT)
            total += folded
            if folded < FOLD_LIMIT:
                return total

    async def drain(self) -> int:
        """Burst mode: claim and write until nothing is ready; return points committed.

        Makes worker tests deterministic (no timing), like arq's ``burst``.
        """
        before = self.stats.points_committed
        await self.queue.reclaim()
        while await self.work_once(0):
            pass
        await self.fold_once()
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
        try:
            outcome = await self.write(chunks)
        except StoreUnavailable as exc:
            self.stats.handbacks += 1
            self.postgres_breaker.record_failure(str(exc))
            log.warning("PostgreSQL unavailable (%s); handing back %d chunk(s)", exc,
                        len(chunks))
            # Shielded: a cancel during shutdown must not strand the leases.
            await asyncio.shield(self.queue.release([c.id for c in chunks]))
            return True
        except BaseException:
            await asyncio.shield(self.queue.release([c.id for c in chunks]))
            raise
        finally:
            self.busy.pop(index, None)
        self.postgres_breaker.record_success()
        await asyncio.shield(self.queue.settle(outcome))
        return True

    async def write(self, chunks: list[Chunk]) -> Settlement:
        """Write every point of the claim; decide retries and dead letters."""
        outcome = Settlement(acked=[c.id for c in chunks])
        pending = [(point, chunk) for chunk in chunks for point in chunk.points]
        size = self.path.commit_points
        failed: list[tuple[tuple, Chunk, str, str]] = []  # (point, chunk, reason, error)
        for start in range(0, len(pending), size):
            group = pending[start:start + size]
            await self._write_group(group, outcome, failed)
        self._plan_failures(failed, outcome)
        return outcome

    async def _write_group(self, group: list[tuple[tuple, Chunk]], outcome: Settlement,
                           failed: list) -> None:
        points = [point for point, _ in group]
        try:
            async with self.db.transaction() as cur:
                inserted, refused = await sql.write_points(cur, points)
        except (psycopg2.DataError, psycopg2.IntegrityError) as exc:
            # PostgreSQL refused the data itself: find the poison by bisection.
            await self._bisect(group, outcome, failed, exc)
            return
        except (*TRANSIENT_ERRORS, psycopg2.Error, Unavailable) as exc:
            # Store down, link lost, timeouts, or a schema problem: none is the
            # points' fault, so none may spend their attempts.
            raise StoreUnavailable(str(exc).strip() or type(exc).__name__) from exc
        for index, reason, message in refused:
            point, chunk = group[index]
            failed.append((point, chunk, reason, message))
        good = len(points) - len(refused)
        outcome.committed += inserted
        self.stats.points_committed += inserted
        self.stats.points_duplicate += good - inserted
        self.stats.batch_sizes.append(len(points))

    async def _bisect(self, group: list, outcome: Settlement, failed: list,
                      exc: Exception) -> None:
        """Split a group that failed for a data reason until the poison is alone."""
        if len(group) == 1:
            point, chunk = group[0]
            failed.append((point, chunk, "data_error", str(exc).strip().splitlines()[0]))
            return
        middle = len(group) // 2
        for half in (group[:middle], group[middle:]):
            await self._write_group(half, outcome, failed)

    def _plan_failures(self, failed: list, outcome: Settlement) -> None:
        """Retry reference failures with backoff; dead-letter spent and poison points."""
        if not failed:
            return
        s = self.settings
        now_ms = time.time_ns() // 1_000_000
        retry_groups: dict[tuple[int, int], list] = {}
        for point, chunk, reason, error in failed:
            attempts = chunk.attempts + 1
            first = chunk.first_failed_ms or now_ms
            if reason in PERMANENT_REASONS or attempts >= s.queue_max_attempts:
                entry = orjson.dumps({
                    "point": _point_json(point), "raw": point, "reason": reason,
                    "attempts": attempts,
                    "first_failed_at": _utc(first * 1000), "last_failed_at": _utc(now_ms * 1000),
                    "last_error": error,
                })
                outcome.dead.append((point[0], entry))
                self.stats.points_dead += 1
            else:
                retry_groups.setdefault((attempts, first), []).append((point, error))
        for (attempts, first), items in retry_groups.items():
            due_ms = now_ms + int(1000 * backoff_s(attempts - 1, s.retry_base_s, s.retry_max_s))
            for start in range(0, len(items), self.path.chunk_points):
                piece = items[start:start + self.path.chunk_points]
                (chunk_id,) = new_chunk_ids([len(piece)])
                chunk = Chunk(chunk_id, [p for p, _ in piece], attempts, first, piece[-1][1])
                outcome.retries.append((chunk, due_ms))
                self.stats.points_retried += len(piece)


def _utc(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _point_json(point: tuple) -> dict[str, Any]:
    point_id, competition_id, participant_id, value, recorded_us, received_us = point
    return {"id": point_id, "competition_id": competition_id,
            "participant_id": participant_id, "value": value,
            "recorded_at": _utc(recorded_us), "received_at": _utc(received_us)}


def _index(name: str) -> int:
    suffix = name.rsplit("-", 1)[-1]
    return int(suffix) if suffix.isdigit() else -1
