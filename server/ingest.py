"""Accepting points: put them in the queue, and optionally wait for their commit.

The handler validates; this module decides where validated points go.  Today
that is always the Redis queue; ``wait_committed`` serves ``?ack=committed`` by
polling PostgreSQL for the ids with a growing interval, which works whichever
process's worker commits them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import redis.exceptions

from server.errors import Unavailable
from server.points import Point
from server.queue.redis_queue import PointQueue
from server.storage import points as sql
from server.storage.database import Database


class Ingest:
    def __init__(self, queue: PointQueue, db: Database) -> None:
        self.queue = queue
        self.db = db
        self.accepted = 0

    async def accept(self, points: Sequence[Point]) -> None:
        """Enqueue ``points``; once this returns they are durable in Redis (AOF)."""
        try:
            await self.queue.enqueue(points)
        except redis.exceptions.RedisError as exc:
            raise Unavailable(f"the queue is unavailable ({type(exc).__name__}); "
                              "nothing was accepted", retry_after_s=1) from exc
        self.accepted += len(points)

    async def wait_committed(self, ids: Sequence[str], timeout_s: float) -> bool:
        """True once every id is committed in PostgreSQL; False if ``timeout_s`` passes."""
        deadline = time.monotonic() + timeout_s
        delay = 0.005
        unique = list(dict.fromkeys(ids))
        while True:
            async with self.db.cursor() as cur:
                if await sql.count_committed(cur, unique) == len(unique):
                    return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.1)
