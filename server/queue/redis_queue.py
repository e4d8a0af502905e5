"""The point queue in Redis: enqueue, claim under a lease, settle, hand back, reclaim.

Delivery is at-least-once: a chunk leaves Redis only when ``settle`` runs, and a
worker settles only after its PostgreSQL transaction committed.  A worker that
dies in between leaves a lease that ``reclaim`` returns to the queue after
``QUEUE_LEASE_S``; the idempotent insert turns the redelivery into a no-op.

Every method raises ``StoreUnavailable("redis")`` when Redis fails, never a
redis-py exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar

import orjson
import redis.asyncio as aioredis
import redis.exceptions

from server.errors import StoreUnavailable
from server.points import Point
from server.queue import keys, scripts
from server.queue.chunks import Chunk, Settlement, chunk_enqueued_ms, new_chunk_ids
from server.queue.paths import IngestPath

T = TypeVar("T")
RECLAIM_LIMIT = 1000  # chunks moved per reclaim call; the reclaimer loops while busy


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@contextlib.contextmanager
def translated_errors() -> Iterator[None]:
    """redis-py's exceptions become domain errors here, where they enter.

    Any Redis failure (down, timed out, loading, read-only replica, out of
    memory) means the same to callers: the queue cannot take or give work now.
    """
    try:
        yield
    except redis.exceptions.RedisError as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StoreUnavailable("redis", f"Redis is unavailable ({text})") from exc


def _translated(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Run a queue operation under ``translated_errors``."""

    @functools.wraps(method)
    async def wrapper(*args: Any, **kwargs: Any) -> T:
        with translated_errors():
            return await method(*args, **kwargs)

    return wrapper


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

    @_translated
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

    @_translated
    async def claim(self, max_points: int, lease_s: float) -> list[Chunk]:
        """Lease up to ``max_points`` (at least one chunk) for ``lease_s`` seconds."""
        flat = await self._claim(
            keys=[keys.ITEMS, keys.READY, keys.LEASES, keys.STATS, keys.PAUSED],
            args=[_now_ms(), int(lease_s * 1000), max_points],
        )
        return [Chunk.from_payload(flat[i].decode(), flat[i + 1])
                for i in range(0, len(flat), 2)]

    @_translated
    async def settle(self, outcome: Settlement) -> None:
        args: list[Any] = [_now_ms(), outcome.committed, len(outcome.acked), *outcome.acked,
                           len(outcome.retries)]
        for chunk, due_ms in outcome.retries:
            args += (chunk.id, chunk.payload(), due_ms)
        args.append(len(outcome.dead))
        for letter in outcome.dead:
            args += (letter.point_id, letter.entry())
        args += (self.dead_max, self.dead_max_age_ms)
        await self._settle(keys=[keys.ITEMS, keys.LEASES, keys.RETRY, keys.STATS, keys.DEAD,
                                 keys.DEAD_INDEX], args=args)

    @_translated
    async def release(self, chunk_ids: Sequence[str]) -> int:
        """Hand leased chunks back, unspent, to the front of the queue."""
        if not chunk_ids:
            return 0
        return await self._release(keys=[keys.LEASES, keys.READY, keys.STATS],
                                   args=list(chunk_ids))

    @_translated
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

    @_translated
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

    @_translated
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

    @_translated
    async def purge_dead(self, point_ids: Sequence[str] | None) -> int:
        """Delete dead-lettered points (given ids, or all when None)."""
        if point_ids is not None and not point_ids:
            return 0
        return int(await self._purge_dead(keys=[keys.DEAD, keys.DEAD_INDEX, keys.STATS],
                                          args=list(point_ids or [])))

    @_translated
    async def pause(self) -> None:
        await self.redis.set(keys.PAUSED, b"1")

    @_translated
    async def resume(self) -> None:
        await self.redis.delete(keys.PAUSED)
        self.wakeup.set()

    @_translated
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
