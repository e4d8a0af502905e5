"""The dead-letter queue: points (and undecodable chunks) given up on, kept for people.

Entries live in each queue shard's ``dead`` hash by key — ``<competition>:<point
id>`` (with a content digest for an ``id_conflict``), or ``chunk:<id>`` — ordered by
last failure in its ``dead:index``; the SETTLE script adds them and trims the
shard's queue to its bounds (``DLQ_MAX_ENTRIES``, ``DLQ_MAX_AGE_S``, per shard).
Listing merges the shards by failure time; requeue and purge go to every shard
(an entry is on one: a requeued point goes back to the shard it failed on, its
competition's).  From here an operator lists
them, sends points back to the queue with their attempts reset, or purges them.

Entries are read as data that may be anything (another producer, an older
version, a hand edit): one that is not an entry of ours is shown as
``unreadable_entry`` and is never requeued, never a failure of the request.
"""

from __future__ import annotations

import base64
import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import orjson
import redis.asyncio as aioredis

from server.queue import scripts
from server.queue.chunks import Chunk, new_chunk_ids, well_formed
from server.queue.keys import ShardKeys, shard_keys
from server.queue.wakeup import WakeUp
from server.redis_client import translated

REQUEUE_PAGE = 1000  # entries read and moved per call of a requeue


@dataclass
class Requeued:
    """What a requeue did: points moved back to the queue, points left in the DLQ because
    the queue was at ``QUEUE_MAX_POINTS``, and entries that hold no point to requeue
    (a chunk kept whole, an unreadable entry)."""

    requeued: int = 0
    refused_queue_full: int = 0
    not_requeueable: int = 0


def _decoded(entry: bytes) -> dict[str, Any] | None:
    """A stored entry as ours are written (a JSON object with a reason), or None."""
    try:
        data = orjson.loads(entry)
    except orjson.JSONDecodeError:
        return None
    return data if type(data) is dict and type(data.get("reason")) is str else None


class DeadLetterQueue:
    def __init__(self, client: aioredis.Redis, wakeup: WakeUp, *, max_points: int = 0,
                 shards: Sequence[ShardKeys] = (shard_keys(0),)) -> None:
        self.redis = client
        self.shards = tuple(shards)
        self.wakeup = wakeup  # a requeue wakes the idle workers
        self.max_points = max_points  # the queue's admission bound (0 = none)
        self._requeue_dead = client.register_script(scripts.REQUEUE_DEAD)
        self._purge_dead = client.register_script(scripts.PURGE_DEAD)

    @translated
    async def page(self, limit: int, offset: int) -> tuple[list[dict[str, Any]], int | None]:
        """DLQ entries, oldest failure first; returns (entries, next offset or None).

        The cursor is an offset: entries requeued, purged or trimmed between two
        pages shift it, so a page may skip or repeat an entry (admin view).
        """
        # Our clients never decode replies: bytes (redis-py types them bytes | str).
        # Each shard's first offset + limit, merged by failure time, then the page.
        heads = []
        for n, at in enumerate(self.shards):
            first = offset if len(self.shards) == 1 else 0
            listed = cast(list[tuple[bytes, float]], await self.redis.zrange(
                at.dead_index, first, offset + limit - 1, withscores=True))
            heads.append([(score, n, key) for key, score in listed])
        merged = list(heapq.merge(*heads))
        window = merged if len(self.shards) == 1 else merged[offset:offset + limit]
        if not window:
            return [], None
        ids = [key for _, _, key in window]
        raw: list[bytes | None] = [None] * len(ids)
        for n, at in enumerate(self.shards):
            mine = [i for i, (_, shard, _) in enumerate(window) if shard == n]
            if mine:
                found = cast(list[bytes | None],
                             await self.redis.hmget(at.dead, [ids[i] for i in mine]))
                for i, entry in zip(mine, found):
                    raw[i] = entry
        entries = []
        for point_id, entry in zip(ids, raw):
            if entry is None:
                continue
            data = _decoded(entry)
            if data is None:  # written by something else: show, don't fail
                data = {"point": None, "key": point_id.decode(errors="replace"),
                        "reason": "unreadable_entry", "raw_base64":
                        base64.b64encode(entry).decode()}
            data.pop("raw", None)
            data.setdefault("key", point_id.decode(errors="replace"))  # what selects it
            entries.append(data)
        return entries, (offset + limit if len(ids) == limit else None)

    @translated
    async def requeue(self, point_ids: Sequence[str] | None) -> Requeued:
        """Move dead-lettered points (given ids, or all when None) back to the queue.

        Within the queue's bound: once ``QUEUE_MAX_POINTS`` are queued, the rest stay
        dead-lettered and are counted as refused.  "All" means the entries that
        failed before this call (Redis's clock) and at most as many as there were:
        a requeued point that fails again is dead-lettered anew, after the call
        began, and is not picked up again, so the call always ends.  A chunk kept
        whole, or an entry that is not ours, has no point to requeue: it stays
        for inspection until purged.
        """
        done = Requeued()
        if point_ids is not None:
            for at in self.shards:  # each entry is on one shard: the others skip it
                await self._requeue_page(at, list(point_ids), done)
            return done
        seconds, micros = await self.redis.time()
        began_ms = seconds * 1000 + micros // 1000
        for at in self.shards:
            await self._requeue_all(at, began_ms, done)
        return done

    async def _requeue_all(self, at: ShardKeys, began_ms: int, done: Requeued) -> None:
        """Requeue one shard's entries that failed before ``began_ms``."""
        budget = int(await self.redis.zcard(at.dead_index))
        offset = 0  # entries left in place so far, at the front of the range
        while budget > 0:
            page = cast(list[bytes], await self.redis.zrangebyscore(
                at.dead_index, "-inf", began_ms, start=offset,
                num=min(REQUEUE_PAGE, budget)))
            # A key that is not UTF-8 is none of ours: it matches nothing, and stays.
            ids = [i.decode(errors="replace") for i in page]
            if not ids:
                break
            budget -= len(ids)
            offset += len(ids) - await self._requeue_page(at, ids, done)

    async def _requeue_page(self, at: ShardKeys, ids: list[str], done: Requeued) -> int:
        """Requeue the points of these entries of shard ``at`` (one script call); add to
        ``done``; return how many moved."""
        entries = cast(list[bytes | None], await self.redis.hmget(at.dead, ids))
        points: list[tuple[str, Any]] = []
        for point_id, entry in zip(ids, entries):
            if entry is None:
                continue  # gone meanwhile (requeued, purged, trimmed)
            data = _decoded(entry)
            raw = data.get("raw") if data is not None else None
            if well_formed(raw):
                points.append((point_id, raw))
            else:
                done.not_requeueable += 1
        if not points:
            return 0
        args: list[Any] = [self.max_points]
        for (point_id, raw), chunk_id in zip(points, new_chunk_ids([1] * len(points))):
            args += (point_id, chunk_id, Chunk(chunk_id, [tuple(raw)]).payload())
        moved, refused = await self._requeue_dead(
            keys=[at.dead, at.dead_index, at.items, at.ready, at.stats], args=args)
        done.requeued += int(moved)
        done.refused_queue_full += int(refused)
        if moved:
            self.wakeup.set()
        return int(moved)

    @translated
    async def purge(self, point_ids: Sequence[str] | None) -> int:
        """Delete dead-lettered points (given ids, or all when None)."""
        if point_ids is not None and not point_ids:
            return 0
        purged = 0
        for at in self.shards:
            purged += int(await self._purge_dead(keys=[at.dead, at.dead_index, at.stats],
                                                 args=list(point_ids or [])))
        return purged
