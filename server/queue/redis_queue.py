"""The point queue in Redis: enqueue, claim under a lease, settle, hand back, reclaim.

Delivery is at-least-once: a chunk leaves Redis only when ``settle`` runs, and a
worker settles only after its PostgreSQL transaction committed.  A worker that
dies in between leaves a lease that ``reclaim`` returns to the queue after
``QUEUE_LEASE_S``; the idempotent insert turns the redelivery into a no-op.

Every method raises domain errors, never a redis-py exception:
``StoreUnavailable("redis")`` when Redis fails (``PoolTimeout`` when only this
process's pool is busy), ``QueueFull`` past the admission bound or at Redis's
``maxmemory``, ``EnqueueInterrupted`` when an enqueue stopped part-way.
"""

from __future__ import annotations

import asyncio
import base64
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

from server.errors import (
    EnqueueInterrupted,
    PoolTimeout,
    QueueFull,
    ServiceError,
    StoreUnavailable,
)
from server.points import Point
from server.queue import keys, scripts
from server.queue.chunks import Chunk, Settlement, chunk_enqueued_ms, chunk_size, new_chunk_ids
from server.queue.paths import IngestPath

T = TypeVar("T")
RECLAIM_LIMIT = 1000  # chunks moved per reclaim call; the reclaimer loops while busy


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _domain(exc: redis.exceptions.RedisError) -> ServiceError:
    """The domain meaning of a Redis failure."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "OOM command not allowed" in text:
        return QueueFull("Redis is at its memory limit; retry shortly")
    if "No connection available" in text:  # this process's pool, not Redis, is busy
        return PoolTimeout("redis", "no Redis connection was free in time; retry shortly")
    return StoreUnavailable("redis", f"Redis is unavailable ({text})")


def _queue_full(queued: int, bound: int) -> QueueFull:
    return QueueFull(f"the queue is full ({queued} of {bound} points queued); retry shortly")


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
        self.enqueue_calls = 0  # ENQUEUE round trips made (coalescing makes fewer)
        self._gathering: list[tuple[list[Any], int, asyncio.Future]] = []
        self._flusher: asyncio.Future | None = None
        self._enqueue = client.register_script(scripts.ENQUEUE)
        self._claim = client.register_script(scripts.CLAIM)
        self._renew = client.register_script(scripts.RENEW)
        self._settle = client.register_script(scripts.SETTLE)
        self._release = client.register_script(scripts.RELEASE)
        self._reclaim = client.register_script(scripts.RECLAIM)
        self._requeue_dead = client.register_script(scripts.REQUEUE_DEAD)
        self._purge_dead = client.register_script(scripts.PURGE_DEAD)
        self._pause = client.register_script(scripts.PAUSE)

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

        Each call is all-or-nothing and refused whole past ``max_points``
        (``QueueFull``).  When a later call of a request fails, ``EnqueueInterrupted``
        says how many of its points went in.  On a coalescing path a request is
        one group of the next shared call.
        """
        size = self.path.chunk_points
        pieces = [points[i:i + size] for i in range(0, len(points), size)]
        ids = new_chunk_ids([len(piece) for piece in pieces])
        chunk_args: list[Any] = []
        for chunk_id, piece in zip(ids, pieces):
            chunk_args += (chunk_id, Chunk(chunk_id, list(piece)).payload())
        if self.path.coalesce:
            await self._coalesced(chunk_args, len(points))
            return
        per_call = 2 * (self.path.chunks_per_call or len(pieces))
        accepted = 0
        for start in range(0, len(chunk_args), per_call):
            group = chunk_args[start:start + per_call]
            count = sum(chunk_size(chunk_id) for chunk_id in group[::2])
            try:
                admitted, queued, bound = await self._call_enqueue([group])
            except redis.exceptions.RedisError as exc:
                unknown = count if _maybe_applied(exc) else 0
                if accepted == 0 and unknown == 0:
                    raise _domain(exc) from exc
                raise EnqueueInterrupted(_domain(exc), accepted=accepted,
                                         unknown=unknown) from exc
            if not admitted:
                full = _queue_full(queued, bound)
                if accepted == 0:
                    raise full
                raise EnqueueInterrupted(full, accepted=accepted, unknown=0)
            accepted += count
            self.wakeup.set()

    async def _call_enqueue(self, groups: list[list[Any]]) -> tuple[int, int, int]:
        """One ENQUEUE call for ``groups``; (groups admitted, queued before, bound)."""
        args: list[Any] = [self.max_points]
        for group in groups:
            args += (len(group) // 2, *group)
        self.enqueue_calls += 1
        admitted, queued, bound = await self._enqueue(
            keys=[keys.ITEMS, keys.READY, keys.STATS], args=args)
        return int(admitted), int(queued), int(bound)

    async def _coalesced(self, group: list[Any], count: int) -> None:
        """Join the next shared ENQUEUE call; return once this group is in Redis.

        Natural batching, as group commit does it: while one call is in flight,
        the groups of the requests that arrive meanwhile gather, and go together
        in the next call.  No timer: an idle queue sends a lone group at once.
        """
        done = asyncio.get_running_loop().create_future()
        self._gathering.append((group, count, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush_gathered())
        await done

    async def _flush_gathered(self) -> None:
        while self._gathering:
            batch, self._gathering = self._gathering, []
            try:
                admitted, queued, bound = await self._call_enqueue([g for g, _, _ in batch])
            except BaseException as exc:
                maybe = isinstance(exc, redis.exceptions.RedisError) and _maybe_applied(exc)
                for _, count, done in batch:
                    if done.done():
                        continue
                    if not isinstance(exc, redis.exceptions.RedisError):
                        done.set_exception(StoreUnavailable("redis", f"enqueue failed: {exc!r}"))
                    elif maybe:
                        done.set_exception(EnqueueInterrupted(_domain(exc), accepted=0,
                                                              unknown=count))
                    else:
                        done.set_exception(_domain(exc))
                if not isinstance(exc, Exception):
                    raise
                continue
            for index, (_, _, done) in enumerate(batch):
                if not done.done():
                    if index < admitted:
                        done.set_result(None)
                    else:
                        done.set_exception(_queue_full(queued, bound))
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
            keys=[keys.LEASES, keys.RETRY, keys.READY, keys.STATS, keys.HOLDERS],
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
        await self._pause(keys=[keys.PAUSED, keys.HOLDERS])

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
