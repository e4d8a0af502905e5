"""Settling a claim: write its points to PostgreSQL and decide what becomes of each.

Points are written in groups of ``path.commit_points``; each group is one
statement (so one transaction and one round trip) that checks the points'
references, inserts those that hold (idempotent on id) and logs the inserted
rows' standings deltas.  A group's outcome:

* committed — acknowledged with the claim;
* unknown competition/participant — retried with exponential backoff and full
  jitter (registration may lag behind scoring), dead-lettered after
  ``QUEUE_MAX_ATTEMPTS``;
* PostgreSQL refuses the data itself (``DataRejected``) — the group is bisected
  until the poison point is alone; it is dead-lettered and its group-mates commit;
* the store fails (``StoreUnavailable``) — nothing is decided: the exception
  propagates and the worker hands the whole claim back unspent.

The decisions are collected in a ``Settlement`` that the worker applies to Redis
in one step, after the transactions committed.
"""

from __future__ import annotations

import random
import time

from server.config import Settings
from server.errors import DataRejected
from server.points import Point
from server.queue.chunks import Chunk, DeadLetter, Settlement, new_chunk_ids
from server.queue.counters import WorkerStats
from server.queue.paths import IngestPath
from server.storage import points as sql
from server.storage.database import Database

PERMANENT_REASONS = ("data_error", "invalid_value")  # retrying cannot help: dead-letter now

# (point, its chunk, reason, error message) of a point that did not commit.
Failure = tuple[Point, Chunk, str, str]


def backoff_s(attempt: int, base_s: float, max_s: float) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(max, base·2^attempt)]."""
    return random.uniform(0, min(max_s, base_s * (2 ** min(attempt, 32))))


class ClaimWriter:
    """Writes claims for the workers of one process."""

    def __init__(self, db: Database, path: IngestPath, settings: Settings,
                 stats: WorkerStats) -> None:
        self.db = db
        self.path = path
        self.settings = settings
        self.stats = stats

    async def write(self, chunks: list[Chunk]) -> Settlement:
        """Write every point of the claim; decide retries and dead letters."""
        outcome = Settlement(acked=[c.id for c in chunks])
        pending = [(point, chunk) for chunk in chunks for point in chunk.points]
        size = self.path.commit_points or len(pending)
        failed: list[Failure] = []
        for start in range(0, len(pending), size):
            await self._write_group(pending[start:start + size], outcome, failed)
        self._plan_failures(failed, outcome)
        return outcome

    async def _write_group(self, group: list[tuple[Point, Chunk]], outcome: Settlement,
                           failed: list[Failure]) -> None:
        points = [point for point, _ in group]
        try:
            async with self.db.cursor() as cur:  # one statement: its own transaction
                inserted, refused = await sql.write_points(cur, points)
        except DataRejected as exc:
            await self._bisect(group, outcome, failed, exc)
            return
        for index, reason, message in refused:
            point, chunk = group[index]
            failed.append((point, chunk, reason, message))
        good = len(points) - len(refused)
        outcome.committed += inserted
        self.stats.points_committed += inserted
        self.stats.points_duplicate += good - inserted
        self.stats.batch_sizes.append(len(points))

    async def _bisect(self, group: list[tuple[Point, Chunk]], outcome: Settlement,
                      failed: list[Failure], exc: DataRejected) -> None:
        """Split a group that failed for a data reason until the poison is alone."""
        if len(group) == 1:
            point, chunk = group[0]
            failed.append((point, chunk, "data_error", exc.message))
            return
        middle = len(group) // 2
        for half in (group[:middle], group[middle:]):
            await self._write_group(half, outcome, failed)

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
            for start in range(0, len(items), self.path.chunk_points):
                piece = items[start:start + self.path.chunk_points]
                (chunk_id,) = new_chunk_ids([len(piece)])
                chunk = Chunk(chunk_id, [p for p, _ in piece], attempts, first, piece[-1][1])
                outcome.retries.append((chunk, delay_ms))
                self.stats.points_retried += len(piece)
