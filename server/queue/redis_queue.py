"""The point queue in Redis: enqueue, claim under a lease, settle, hand back, reclaim.

Delivery is at-least-once: a chunk leaves Redis only when ``settle`` runs, and a
worker settles only after its PostgreSQL transaction committed.  A worker that
dies in between leaves a lease that ``reclaim`` returns to the queue after
``QUEUE_LEASE_S``; the idempotent insert turns the redelivery into a no-op.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis
import redis.exceptions

from server.points import Point, new_ids
from server.queue import keys, scripts
from server.queue.paths import IngestPath

# Any Redis failure: down, timed out, loading, read-only replica, out of memory.
# Callers treat them alike: the queue cannot take or give work right now.
REDIS_ERRORS: tuple[type[BaseException], ...] = (redis.exceptions.RedisError,)
RECLAIM_LIMIT = 1000  # chunks moved per reclaim call; the reclaimer loops while busy


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def chunk_size(chunk_id: str) -> int:
    return int(chunk_id.rsplit("-", 1)[1])


def chunk_enqueued_ms(chunk_id: str) -> int:
    return int(chunk_id[:12], 16)


@dataclass
class Chunk:
    """Claimed points that travel together, with their shared retry history."""

    id: str
    points: list[Point]
    attempts: int = 0
    first_failed_ms: int | None = None
    last_error: str | None = None

    def payload(self) -> bytes:
        return orjson.dumps({"a": self.attempts, "p": self.points, "f": self.first_failed_ms,
                             "e": self.last_error})

    @classmethod
    def from_payload(cls, chunk_id: str, raw: bytes) -> Chunk:
        data = orjson.loads(raw)
        return cls(chunk_id, [tuple(p) for p in data["p"]], data["a"], data["f"], data["e"])


def new_chunk_ids(sizes: Sequence[int]) -> list[str]:
    return [f"{base}-{n}" for base, n in zip(new_ids(len(sizes)), sizes)]


@dataclass
class Settlement:
    """What a worker decided about a claim, applied to Redis in one step."""

    acked: list[str] = field(default_factory=list)
    committed: int = 0
    retries: list[tuple[Chunk, int]] = field(default_factory=list)  # (chunk, due ms)
    dead: list[tuple[str, bytes]] = field(default_factory=list)  # (point id, entry)


class PointQueue:
    """The queue's operations; the ingest path decides how they are grouped."""

    def __init__(self, client: aioredis.Redis, path: IngestPath, *,
                 dead_max: int = 100_000, dead_max_age_s: float = 7 * 86400) -> None:
        self.redis = client
        self.path = path
        self.dead_max = dead_max
        self.dead_max_age_ms = int(dead_max_age_s * 1000)
        self.wakeup = asyncio.Event()  # set on local enqueue so idle workers claim at once
        self._enqueue = client.register_script(scripts.ENQUEUE)
        self._claim = client.register_script(scripts.CLAIM)
        self._settle = client.register_script(scripts.SETTLE)
        self._release = client.register_script(scripts.RELEASE)
        self._reclaim = client.register_script(scripts.RECLAIM)
        self._requeue_dead = client.register_script(scripts.REQUEUE_DEAD)
        self._purge_dead = client.register_script(scripts.PURGE_DEAD)

    async def enqueue(self, points: Sequence[Point]) -> None:
        """Put points in the queue: chunked and grouped into calls as the path says."""
        size = self.path.chunk_points
        pieces = [points[i:i + size] for i in range(0, len(points), size)]
        ids = new_chunk_ids([len(piece) for piece in pieces])
        args: list[Any] = []
        for chunk_id, piece in zip(ids, pieces):
            args += (chunk_id, Chunk(chunk_id, list(piece)).payload())
        per_call = 2 * (self.path.chunks_per_call or len(pieces))
        for start in range(0, len(args), per_call):
            await self._enqueue(keys=[keys.ITEMS, keys.READY, keys.STATS],
                                args=args[start:start + per_call])
        self.wakeup.set()

    async def claim(self, max_points: int, lease_s: float) -> list[Chunk]:
        """Lease up to ``max_points`` (at least one chunk) for ``lease_s`` seconds."""
        flat = await self._claim(
            keys=[keys.ITEMS, keys.READY, keys.LEASES, keys.STATS, keys.PAUSED],
            args=[_now_ms(), int(lease_s * 1000), max_points],
        )
        return [Chunk.from_payload(flat[i].decode(), flat[i + 1])
                for i in range(0, len(flat), 2)]

    async def settle(self, outcome: Settlement) -> None:
        args: list[Any] = [_now_ms(), outcome.committed, len(outcome.acked), *outcome.acked,
                           len(outcome.retries)]
        for chunk, due_ms in outcome.retries:
            args += (chunk.id, chunk.payload(), due_ms)
        args.append(len(outcome.dead))
        for point_id, entry in outcome.dead:
            args += (point_id, entry)
        args += (self.dead_max, self.dead_max_age_ms)
        await self._settle(keys=[keys.ITEMS, keys.LEASES, keys.RETRY, keys.STATS, keys.DEAD,
                                 keys.DEAD_INDEX], args=args)

    async def release(self, chunk_ids: Sequence[str]) -> int:
        """Hand leased chunks back, unspent, to the front of the queue."""
        if not chunk_ids:
            return 0
        return await self._release(keys=[keys.LEASES, keys.READY, keys.STATS],
                                   args=list(chunk_ids))

    async def reclaim(self) -> tuple[int, int]:
        """Return expired leases to the queue and due retries; (expired, due) chunk counts."""
        expired, due = await self._reclaim(
            keys=[keys.LEASES, keys.RETRY, keys.READY, keys.STATS],
            args=[_now_ms(), RECLAIM_LIMIT],
        )
        if expired or due:
            self.wakeup.set()
        return int(expired), int(due)

    # --- dead letters ------------------------------------------------------------

    async def dead_page(self, limit: int, offset: int) -> tuple[list[dict[str, Any]], int | None]:
        """DLQ entries, oldest failure first; returns (entries, next offset or None).

        The cursor is an offset: entries requeued, purged or trimmed between two
        pages shift it, so a page may skip or repeat an entry (admin view).
        """
        ids = await self.redis.zrange(keys.DEAD_INDEX, offset, offset + limit - 1)
        if not ids:
            return [], None
        raw = await self.redis.hmget(keys.DEAD, ids)
        entries = []
        for entry in raw:
            if entry is not None:
                data = orjson.loads(entry)
                data.pop("raw", None)
                entries.append(data)
        return entries, (offset + limit if len(ids) == limit else None)

    async def requeue_dead(self, point_ids: Sequence[str] | None) -> int:
        """Move dead-lettered points (given ids, or all when None) back to the queue."""
        moved = 0
        while True:
            batch = list(point_ids) if point_ids is not None else [
                i.decode() for i in await self.redis.zrange(keys.DEAD_INDEX, 0, 999)]
            if not batch:
                return moved
            entries = await self.redis.hmget(keys.DEAD, batch)
            found = [(pid, orjson.loads(e)) for pid, e in zip(batch, entries) if e is not None]
            args: list[Any] = []
            for (point_id, entry), chunk_id in zip(found, new_chunk_ids([1] * len(found))):
                args += (point_id, chunk_id, Chunk(chunk_id, [tuple(entry["raw"])]).payload())
            if args:
                moved += await self._requeue_dead(
                    keys=[keys.DEAD, keys.DEAD_INDEX, keys.ITEMS, keys.READY, keys.STATS],
                    args=args)
                self.wakeup.set()
            if point_ids is not None or not found:
                return moved

    async def purge_dead(self, point_ids: Sequence[str] | None) -> int:
        """Delete dead-lettered points (given ids, or all when None)."""
        if point_ids is not None and not point_ids:
            return 0
        return int(await self._purge_dead(keys=[keys.DEAD, keys.DEAD_INDEX, keys.STATS],
                                          args=list(point_ids or [])))

    async def pause(self) -> None:
        await self.redis.set(keys.PAUSED, b"1")

    async def resume(self) -> None:
        await self.redis.delete(keys.PAUSED)
        self.wakeup.set()

    async def stats(self) -> dict[str, Any]:
        """Point counters plus the age of the oldest unclaimed chunk."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.STATS)
            pipe.lindex(keys.READY, 0)
            pipe.exists(keys.PAUSED)
            counters, head, paused = await pipe.execute()
        values = {k.decode(): int(v) for k, v in counters.items()}
        oldest = 0.0
        if head is not None:
            oldest = max(0.0, (_now_ms() - chunk_enqueued_ms(head.decode())) / 1000)
        return {
            "depth": values.get("ready", 0),
            "inflight": values.get("inflight", 0),
            "retry_scheduled": values.get("retry", 0),
            "dead": values.get("dead", 0),
            "oldest_age_s": round(oldest, 3),
            "paused": bool(paused),
            "totals": {name: values.get(name, 0) for name in
                       ("enqueued", "committed", "retried", "reclaimed", "dead_lettered")},
        }
