"""Settling a claim: write its points to PostgreSQL and decide what becomes of each.

Points are written in groups of ``strategy.commit_points``; each group is one
statement (so one transaction and one round trip) that checks the points'
references, inserts those that hold (idempotent on id) and logs the inserted
rows' standings deltas.  A group's outcome:

* committed — acknowledged with the claim;
* unknown competition/participant — retried with exponential backoff and full
  jitter (registration may lag behind scoring), dead-lettered after
  ``QUEUE_MAX_ATTEMPTS``;
* PostgreSQL refuses the data itself (``DataRejected``) — the group is bisected
  until the poison point is alone; it is dead-lettered and its group-mates commit;
* its key (competition, id) is taken by a point of other content — dead-lettered
  at once as ``id_conflict`` (a retry cannot help), never counted as a duplicate;
* the store fails (``StoreUnavailable``) — nothing is decided: the exception
  propagates and the worker hands the whole claim back unspent.

Fenced: given a ``fence`` (the worker's lease), each group's statement runs in a
transaction that commits only if the fence says the claim is still held; else
it is rolled back and ``LeaseLost`` propagates (the chunks' new holder writes them).
``BEGIN`` rides with the statement, so the fence costs one round trip (the
``COMMIT``); an autocommitted statement could not be fenced: one held up (a lock,
a slow disk) commits whenever it ends, and aiopg's cancel only closes the socket.

The decisions are collected in a ``Settlement`` that the worker applies to Redis
in one step, after the transactions committed.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable

from server import metrics
from server.config import Settings
from server.errors import DataRejected
from server.points import Point
from server.queue.chunks import Chunk, DeadLetter, Settlement, new_chunk_ids
from server.queue.counters import WorkerStats
from server.queue.lease import LeaseLost
from server.queue.strategy import IngestStrategy
from server.storage import points as sql
from server.storage.database import Database

# Retrying cannot help: dead-letter now.
PERMANENT_REASONS = ("data_error", "invalid_value", "id_conflict")

# (point, its chunk, reason, error message) of a point that did not commit.
Failure = tuple[Point, Chunk, str, str]
# Points of one chunk that go into one statement together.
Part = tuple[Chunk, list[Point]]
# Whether the claim is still held (the lease), asked before each commit; None: unfenced.
Fence = Callable[[], Awaitable[bool]] | None


def backoff_s(attempt: int, base_s: float, max_s: float) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(max, base·2^attempt)]."""
    return random.uniform(0, min(max_s, base_s * (2 ** min(attempt, 32))))


class ClaimWriter:
    """Writes claims for the workers of one process."""

    def __init__(self, db: Database, strategy: IngestStrategy, settings: Settings,
                 stats: WorkerStats) -> None:
        self.db = db
        self.strategy = strategy
        self.settings = settings
        self.stats = stats

    async def write(self, chunks: list[Chunk], fence: Fence = None) -> Settlement:
        """Write every point of the claim; decide retries and dead letters.  With a
        ``fence``, each transaction commits only while it answers True."""
        outcome = Settlement(acked=[c.id for c in chunks])
        failed: list[Failure] = []
        for group in self._groups(chunks):
            await self._write_group(group, outcome, failed, fence)
        self._plan_failures(failed, outcome)
        return outcome

    def _groups(self, chunks: list[Chunk]) -> list[list[Part]]:
        """The claim in groups of ``commit_points`` (0: one group), as parts."""
        size = self.strategy.commit_points
        if not size:
            return [[(chunk, chunk.points) for chunk in chunks]]
        groups: list[list[Part]] = []
        for chunk in chunks:
            for start in range(0, len(chunk.points), size):
                groups.append([(chunk, chunk.points[start:start + size])])
        return groups

    async def _write_group(self, parts: list[Part], outcome: Settlement,
                           failed: list[Failure], fence: Fence = None) -> None:
        batch = sql.PointBatch()
        for index, (_, points) in enumerate(parts):
            if index:  # checking and formatting 1,000 points is ~1 ms: let go between
                await asyncio.sleep(0)
            batch.add(points)
        try:
            if fence is None or not batch.writable:  # unfenced, or no statement to fence
                async with self.db.cursor() as cur:  # one statement: its own transaction
                    inserted, refused = await sql.write_batch(cur, batch)
            else:
                async with self.db.transaction(begin=False) as cur:
                    inserted, refused = await sql.write_batch(cur, batch, begin=True)
                    if not await fence():
                        raise LeaseLost("the lease was lost before the write committed")
        except DataRejected as exc:
            await self._bisect(parts, outcome, failed, exc, fence)
            return
        if refused:
            owned = [(point, chunk) for chunk, points in parts for point in points]
            for index, reason, message in refused:
                point, owner = owned[index]
                failed.append((point, owner, reason, message))
        good = batch.size - len(refused)
        outcome.committed += inserted
        self.stats.points_committed += inserted
        self.stats.points_duplicate += good - inserted
        self.stats.batch_sizes.append(batch.size)
        metrics.points_written(inserted, good - inserted, batch.size)

    async def _bisect(self, parts: list[Part], outcome: Settlement, failed: list[Failure],
                      exc: DataRejected, fence: Fence = None) -> None:
        """Split a group that failed for a data reason until the poison is alone."""
        single = [(chunk, [point]) for chunk, points in parts for point in points]
        if len(single) == 1:
            chunk, (point,) = single[0]
            failed.append((point, chunk, "data_error", exc.message))
            return
        middle = len(single) // 2
        for half in (single[:middle], single[middle:]):
            await self._write_group(half, outcome, failed, fence)

    def _plan_failures(self, failed: list[Failure], outcome: Settlement) -> None:
        """Retry reference failures with backoff; dead-letter spent and poison points."""
        if not failed:
            return
        s = self.settings
        now_ms = time.time_ns() // 1_000_000
        retry_groups: dict[tuple[int, int], list[tuple[Point, str]]] = {}
        for point, chunk, reason, error in failed:
            attempts = chunk.attempts + 1
            first = chunk.first_failed_ms or now_ms
            if reason in PERMANENT_REASONS or attempts >= s.queue_max_attempts:
                outcome.dead.append(DeadLetter(point, reason, attempts, first, now_ms, error))
                self.stats.points_dead += 1
            else:
                retry_groups.setdefault((attempts, first), []).append((point, error))
        for (attempts, first), items in retry_groups.items():
            # A delay, not a due time: the SETTLE script adds it to Redis's clock.
            delay_ms = int(1000 * backoff_s(attempts - 1, s.retry_base_s, s.retry_max_s))
            for start in range(0, len(items), self.strategy.chunk_points):
                piece = items[start:start + self.strategy.chunk_points]
                (chunk_id,) = new_chunk_ids([len(piece)])
                chunk = Chunk(chunk_id, [p for p, _ in piece], attempts, first, piece[-1][1])
                outcome.retries.append((chunk, delay_ms))
                self.stats.points_retried += len(piece)
