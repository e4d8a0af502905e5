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
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
import redis.asyncio as aioredis
import redis.exceptions

from server.errors import EnqueueInterrupted, QueueFull, ServiceError, StoreUnavailable
from server.points import Point
from server.queue import keys, scripts
from server.queue.chunks import Chunk, Settlement, chunk_enqueued_ms, new_chunk_ids
from server.queue.paths import IngestPath

T = TypeVar("T")
RECLAIM_LIMIT = 1000  # chunks moved per reclaim call; the reclaimer loops while busy


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _domain(exc: redis.exceptions.RedisError) -> ServiceError:
    """The domain meaning of a Redis failure."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "QUEUE_FULL" in text:
        return QueueFull(f"the queue is full ({text.split('QUEUE_FULL ', 1)[1]}); "
                         "retry shortly")
    if "OOM command not allowed" in text:
        return QueueFull("Redis is at its memory limit; retry shortly")
    return StoreUnavailable("redis", f"Redis is unavailable ({text})")


def _maybe_applied(exc: redis.exceptions.RedisError) -> bool:
    """Whether a failed call may still have run on the server (its reply was lost).

    A refusal (an error reply, still loading) or a failure to connect or to get a
    pooled connection means it did not; a timeout or a connection lost after
    sending means it may have.
    """
    if isinstance(exc, redis.exceptions.ResponseError | redis.exceptions.BusyLoadingError):
        return False
    text = str(exc)
    if "connecting to" in text or "No connection available" in text:
        return False
    return isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError)


@contextlib.contextmanager
def translated_errors() -> Iterator[None]:
    """redis-py's exceptions become domain errors here, where they enter.

    Any Redis failure (down, timed out, loading, read-only replica) means the same
    to callers: the queue cannot take or give work now (``StoreUnavailable``); a
    full queue or a Redis at ``maxmemory`` is ``QueueFull``.
    """
    try:
        yield
    except redis.exceptions.RedisError as exc:
        raise _domain(exc) from exc


def _translated(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Run a queue operation under ``translated_errors``."""

    @functools.wraps(method)
    async def wrapper(*args: Any, **kwargs: Any) -> T:
        with translated_errors():
            return await method(*args, **kwargs)

    return wrapper


@dataclass
class Claim:
    """Chunks leased together under one fencing token, still undecoded.

    ``raw`` holds (chunk id, payload, handback record) per chunk; decoding is the
    worker's business, inside its guarded block, so a payload that cannot be
    decoded is handed back (and counted) like any other failure.
    """

    token: str
    raw: list[tuple[str, bytes, str]]

    @property
    def ids(self) -> list[str]:
        return [chunk_id for chunk_id, _, _ in self.raw]

    def subset(self, ids: Sequence[str]) -> Claim:
        """The same claim (same token), limited to ``ids``."""
        wanted = set(ids)
        return Claim(self.token, [entry for entry in self.raw if entry[0] in wanted])

    def __bool__(self) -> bool:
        return bool(self.raw)


def handbacks_of(record: str) -> tuple[int, str]:
    """(count, last error) from a ``pq:handbacks`` record ``"n:error"`` ('' = none)."""
    count, _, error = record.partition(":")
    return (int(count) if count.isdigit() else 0), error


class PointQueue:
    """The queue's operations; the ingest path decides how they are grouped."""

    def __init__(self, client: aioredis.Redis, path: IngestPath, *,
                 dead_max: int = 100_000, dead_max_age_s: float = 7 * 86400,
                 max_points: int = 0) -> None:
        self.redis = client
        self.path = path
        self.dead_max = dead_max
        self.dead_max_age_ms = int(dead_max_age_s * 1000)
        self.max_points = max_points  # admission bound in points; 0 = none
        self.wakeup = asyncio.Event()  # set on local enqueue so idle workers claim at once
        self._enqueue = client.register_script(scripts.ENQUEUE)
        self._claim = client.register_script(scripts.CLAIM)
        self._renew = client.register_script(scripts.RENEW)
        self._settle = client.register_script(scripts.SETTLE)
        self._release = client.register_script(scripts.RELEASE)
        self._reclaim = client.register_script(scripts.RECLAIM)
        self._requeue_dead = client.register_script(scripts.REQUEUE_DEAD)
        self._purge_dead = client.register_script(scripts.PURGE_DEAD)

    def with_client(self, client: aioredis.Redis) -> PointQueue:
        """The same queue through another client (the workers' reserved connections)."""
        twin = PointQueue(client, self.path, dead_max=self.dead_max,
                          dead_max_age_s=self.dead_max_age_ms / 1000,
                          max_points=self.max_points)
        twin.wakeup = self.wakeup  # a local enqueue still wakes the idle workers at once
        return twin

    @_translated
    async def enqueue(self, points: Sequence[Point]) -> None:
        """Put points in the queue: chunked and grouped into calls as the path says.

        Each call is all-or-nothing and refused whole past ``max_points``.  When a
        later call fails, ``EnqueueInterrupted`` says how many points went in.
        """
        size = self.path.chunk_points
        pieces = [points[i:i + size] for i in range(0, len(points), size)]
        ids = new_chunk_ids([len(piece) for piece in pieces])
        per_call = self.path.chunks_per_call or len(pieces)
        accepted = 0
        for start in range(0, len(pieces), per_call):
            args: list[Any] = [self.max_points]
            count = 0
            for chunk_id, piece in zip(ids[start:start + per_call],
                                       pieces[start:start + per_call]):
                args += (chunk_id, Chunk(chunk_id, list(piece)).payload())
                count += len(piece)
            try:
                await self._enqueue(keys=[keys.ITEMS, keys.READY, keys.STATS], args=args)
            except redis.exceptions.RedisError as exc:
                unknown = count if _maybe_applied(exc) else 0
                if accepted == 0 and unknown == 0:
                    raise _domain(exc) from exc
                raise EnqueueInterrupted(_domain(exc), accepted=accepted,
                                         unknown=unknown) from exc
            accepted += count
            self.wakeup.set()

    @_translated
    async def claim(self, max_points: int, lease_s: float) -> Claim:
        """Lease up to ``max_points`` (at least one chunk) for ``lease_s`` seconds."""
        token = uuid.uuid4().hex
        flat = await self._claim(
            keys=[keys.ITEMS, keys.READY, keys.LEASES, keys.STATS, keys.PAUSED, keys.HOLDERS,
                  keys.HANDBACKS],
            args=[int(lease_s * 1000), max_points, token],
        )
        return Claim(token, [(flat[i].decode(), flat[i + 1], flat[i + 2].decode())
                             for i in range(0, len(flat), 3)])

    @_translated
    async def renew(self, claim: Claim, lease_s: float) -> int:
        """Extend the claim's leases; return how many of its chunks are still held."""
        return int(await self._renew(keys=[keys.LEASES, keys.HOLDERS],
                                     args=[claim.token, int(lease_s * 1000), *claim.ids]))

    @_translated
    async def settle(self, claim: Claim, outcome: Settlement) -> bool:
        """Apply a settlement; False (nothing applied) when the claim was lost."""
        args: list[Any] = [claim.token, outcome.committed, len(outcome.acked), *outcome.acked,
                           len(outcome.retries)]
        for chunk, delay_ms in outcome.retries:
            args += (chunk.id, chunk.payload(), delay_ms)
        args.append(len(outcome.dead))
        for letter in outcome.dead:
            args += (letter.key, letter.entry())
        args += (self.dead_max, self.dead_max_age_ms)
        settled, _ = await self._settle(
            keys=[keys.ITEMS, keys.LEASES, keys.RETRY, keys.STATS, keys.DEAD, keys.DEAD_INDEX,
                  keys.HOLDERS, keys.HANDBACKS], args=args)
        return bool(settled)

    @_translated
    async def release(self, claim: Claim, *, error: str | None = None) -> int:
        """Hand the claim's chunks back to the front of the queue.

        Unspent (store outage, shutdown) when ``error`` is None; otherwise the
        handback is counted against each chunk, with the error.
        """
        if not claim:
            return 0
        return int(await self._release(
            keys=[keys.LEASES, keys.READY, keys.STATS, keys.HOLDERS, keys.HANDBACKS],
            args=[claim.token, "0" if error is None else "1", (error or "")[:300],
                  *claim.ids]))

    @_translated
    async def reclaim(self) -> tuple[int, int]:
        """Return expired leases to the queue and due retries; (expired, due) chunk counts."""
        expired, due = await self._reclaim(
            keys=[keys.LEASES, keys.RETRY, keys.READY, keys.STATS, keys.HOLDERS,
                  keys.HANDBACKS],
            args=[RECLAIM_LIMIT],
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
        """Move dead-lettered points (given ids, or all when None) back to the queue.

        A dead-lettered chunk that could not be decoded has no point to requeue: it
        stays for inspection until purged.
        """
        moved, skipped = 0, 0  # skipped: entries with no point to requeue (undecodable)
        while True:
            batch = list(point_ids) if point_ids is not None else [
                i.decode() for i in await self.redis.zrange(keys.DEAD_INDEX, skipped,
                                                            skipped + 999)]
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
                       ("enqueued", "committed", "retried", "reclaimed", "dead_lettered",
                        "dlq_dropped")},
        }
