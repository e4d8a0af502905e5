"""The dead-letter queue: points (and undecodable chunks) given up on, kept for people.

Entries live in ``pq:dead`` by key — ``<competition>:<point id>`` (with a
content digest for an ``id_conflict``), or ``chunk:<id>`` — ordered by last
failure in ``pq:dead:index``; the SETTLE script adds them and trims the queue to
its bounds (``DLQ_MAX_ENTRIES``, ``DLQ_MAX_AGE_S``).  From here an operator lists
them, sends points back to the queue with their attempts reset, or purges them.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any, cast

import orjson
import redis.asyncio as aioredis

from server.queue import keys, scripts
from server.queue.chunks import Chunk, new_chunk_ids
from server.queue.wakeup import WakeUp
from server.redis_client import translated


class DeadLetterQueue:
    def __init__(self, client: aioredis.Redis, wakeup: WakeUp) -> None:
        self.redis = client
        self.wakeup = wakeup  # a requeue wakes the idle workers
        self._requeue_dead = client.register_script(scripts.REQUEUE_DEAD)
        self._purge_dead = client.register_script(scripts.PURGE_DEAD)

    @translated
    async def page(self, limit: int, offset: int) -> tuple[list[dict[str, Any]], int | None]:
        """DLQ entries, oldest failure first; returns (entries, next offset or None).

        The cursor is an offset: entries requeued, purged or trimmed between two
        pages shift it, so a page may skip or repeat an entry (admin view).
        """
        # Our clients never decode replies: bytes (redis-py types them bytes | str).
        ids = cast(list[bytes],
                   await self.redis.zrange(keys.DEAD_INDEX, offset, offset + limit - 1))
        if not ids:
            return [], None
        raw = cast(list[bytes | None], await self.redis.hmget(keys.DEAD, ids))
        entries = []
        for point_id, entry in zip(ids, raw):
            if entry is None:
                continue
            try:
                data = orjson.loads(entry)
            except orjson.JSONDecodeError:  # written by something else: show, don't fail
                data = {"point": None, "key": point_id.decode(errors="replace"),
                        "reason": "unreadable_entry", "raw_base64":
                        base64.b64encode(entry).decode()}
            data.pop("raw", None)
            data.setdefault("key", point_id.decode(errors="replace"))  # what selects it
            entries.append(data)
        return entries, (offset + limit if len(ids) == limit else None)

    @translated
    async def requeue(self, point_ids: Sequence[str] | None) -> int:
        """Move dead-lettered points (given ids, or all when None) back to the queue.

        A dead-lettered chunk that could not be decoded has no point to requeue: it
        stays for inspection until purged.
        """
        moved, skipped = 0, 0  # skipped: entries with no point to requeue (undecodable)
        while True:
            batch = list(point_ids) if point_ids is not None else [
                i.decode() for i in cast(list[bytes], await self.redis.zrange(
                    keys.DEAD_INDEX, skipped, skipped + 999))]
            if not batch:
                return moved
            entries = await self.redis.hmget(keys.DEAD, batch)
            found = [(pid, orjson.loads(e)) for pid, e in zip(batch, entries) if e is not None]
            points = [(pid, entry["raw"]) for pid, entry in found if entry.get("raw")]
            skipped += len(found) - len(points)
            args: list[Any] = []
            for (point_id, raw), chunk_id in zip(points, new_chunk_ids([1] * len(points))):
                args += (point_id, chunk_id, Chunk(chunk_id, [tuple(raw)]).payload())
            if args:
                moved += await self._requeue_dead(
                    keys=[keys.DEAD, keys.DEAD_INDEX, keys.ITEMS, keys.READY, keys.STATS],
                    args=args)
                self.wakeup.set()
            if point_ids is not None or not found:
                return moved

    @translated
    async def purge(self, point_ids: Sequence[str] | None) -> int:
        """Delete dead-lettered points (given ids, or all when None)."""
        if point_ids is not None and not point_ids:
            return 0
        return int(await self._purge_dead(keys=[keys.DEAD, keys.DEAD_INDEX, keys.STATS],
                                          args=list(point_ids or [])))
