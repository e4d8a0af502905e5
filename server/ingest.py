"""Accepting points: into the Redis queue, or straight into PostgreSQL when Redis is down.

The handler validates; this module decides where validated points go:

* normally the queue (``accept`` returns once they are durable in Redis);
* when Redis refuses, the points are written to PostgreSQL at once with the
  same idempotent insert the workers use (degraded mode).  That write is
  all-or-nothing: if any point's competition or participant is unknown — which
  the queue would have retried — it raises ``UnknownReferences`` and nothing is
  written;
* when both stores refuse, ``StoreUnavailable`` says that nothing was accepted.

``wait_committed`` serves ``?ack=committed`` by polling PostgreSQL for the ids
with a growing interval, which works whichever process's worker commits them;
a store error while waiting only means "not committed yet".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from server.errors import StoreUnavailable, UnknownReferences
from server.points import Point
from server.queue.redis_queue import PointQueue
from server.storage import points as sql
from server.storage.database import Database

log = logging.getLogger(__name__)


class Ingest:
    def __init__(self, queue: PointQueue, db: Database) -> None:
        self.queue = queue
        self.db = db
        self.accepted = 0
        self.written_directly = 0

    async def accept(self, points: Sequence[Point]) -> bool:
        """Take ``points``; True when they were committed directly (Redis down)."""
        try:
            await self.queue.enqueue(points)
        except StoreUnavailable as exc:
            log.warning("%s; writing %d point(s) to PostgreSQL directly", exc, len(points))
            await self._write_directly(points)
            self.accepted += len(points)
            self.written_directly += len(points)
            return True
        self.accepted += len(points)
        return False

    async def _write_directly(self, points: Sequence[Point]) -> None:
        try:
            async with self.db.transaction() as cur:
                _, refused = await sql.write_points(cur, points)
                if refused:
                    raise UnknownReferences(
                        f"the queue is unavailable and {refused[0][2]}, so nothing was "
                        "written to PostgreSQL (part of the request may be queued: retry it "
                        "with point ids to stay idempotent)")
        except StoreUnavailable as exc:
            raise StoreUnavailable("postgres", "both Redis and PostgreSQL are unavailable; "
                                   "nothing was accepted", retry_after_s=2) from exc

    async def wait_committed(self, ids: Sequence[str], timeout_s: float) -> bool:
        """True once every id is committed in PostgreSQL; False if ``timeout_s`` passes."""
        deadline = time.monotonic() + timeout_s
        delay = 0.005
        unique = list(dict.fromkeys(ids))
        while True:
            try:
                async with self.db.cursor() as cur:
                    if await sql.count_committed(cur, unique) == len(unique):
                        return True
            except StoreUnavailable:
                pass  # PostgreSQL away: the points wait safely in the queue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.1)
