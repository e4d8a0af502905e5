"""Read caches: Redis first (shared by every process), one computation per key at a time.

Values are JSON-ready dicts stored with orjson and a TTL.  A Redis error never
fails a read: the value is computed and kept in a small in-process TTL map
instead, so leaderboards stay fast when Redis is away.

**Single flight.**  When a popular key expires, every read that arrives before
the refill lands misses at once.  Each would run the same query: a leaderboard
read by hundreds of clients would cost hundreds of identical queries per
expiry, at the moment the database is busiest (a cache stampede).  So a miss
joins the computation already in flight for its key in this process (a dict
key -> task); only the first miss starts one.  The computation runs in a task
of its own, awaited through ``asyncio.shield``: a caller that is cancelled
neither cancels it nor strands the others waiting on it.  An error reaches
every caller waiting on that computation and is not cached: the entry leaves
the dict when the task ends, so the next read computes afresh.  The task runs
in an empty context: it is shared work, so it logs no caller's request id.

A reader whose Redis GET left before the refill's SET landed can resume after
the flight has ended, and would start a second one.  So what a process computes
is also kept in its in-process map for the TTL, and a Redis miss looks there
before starting a flight.  That copy's deadline is taken before the SET, so it
never outlives the Redis copy: no answer is staler than the TTL allows.

Across processes (``--processes N``) nothing is coordinated: each process
refills a key at most once per expiry, so PostgreSQL sees at most N queries per
key per TTL however many requests arrive.  (A Redis lock could make that one,
at the price of a round trip on every miss and a wait-or-poll policy for the
losers; N is small.)
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

import orjson
import redis.asyncio as aioredis

from server.errors import ServiceError
from server.queue.keys import CACHE_PREFIX
from server.redis_client import translated_errors

_LOCAL_MAX = 10_000  # entries kept in-process
_LOCAL_MAX_BYTES = 64 * 1024 * 1024  # and their bytes, per process


class ReadCache:
    """Cached JSON bodies by key: Redis, then this process's map, then one computation."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.redis = client
        self._local: dict[str, tuple[float, bytes]] = {}
        self._local_bytes = 0
        self._flights: dict[str, asyncio.Task[bytes]] = {}

    async def get_or_compute(self, key: str, ttl_s: float,
                             compute: Callable[[], Awaitable[Any]]) -> bytes:
        """Return the cached JSON body for ``key``, or compute (once per process, however
        many ask at the same time), store and return it."""
        full_key = CACHE_PREFIX + key
        try:
            with translated_errors():
                # Our clients never decode replies (redis-py types them bytes | str).
                cached = cast(bytes | None, await self.redis.get(full_key))
            redis_ok = True
        except ServiceError:  # Redis away or busy: this process's map, or compute
            cached, redis_ok = None, False
        if cached is None:
            cached = self._local_get(full_key)
        if cached is not None:
            return cached
        flight = self._flights.get(full_key)
        if flight is None:
            flight = asyncio.get_running_loop().create_task(
                self._refill(full_key, ttl_s, compute, redis_ok), context=contextvars.Context())
            self._flights[full_key] = flight
            flight.add_done_callback(lambda done: self._landed(full_key, done))
        return await asyncio.shield(flight)

    async def _refill(self, full_key: str, ttl_s: float,
                      compute: Callable[[], Awaitable[Any]], redis_ok: bool) -> bytes:
        body = orjson.dumps(await compute())
        self._local_put(full_key, body, time.monotonic() + ttl_s)
        if redis_ok:
            with contextlib.suppress(ServiceError), translated_errors():
                await self.redis.set(full_key, body, px=max(1, int(ttl_s * 1000)))
        return body

    def _landed(self, full_key: str, flight: asyncio.Task[bytes]) -> None:
        if self._flights.get(full_key) is flight:
            del self._flights[full_key]

    def _local_get(self, key: str) -> bytes | None:
        hit = self._local.get(key)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    def _local_put(self, key: str, body: bytes, deadline: float) -> None:
        """Keep ``body`` until ``deadline``; the map is bounded in entries and bytes
        (clients choose the keys: every page of every leaderboard)."""
        old = self._local.pop(key, None)
        if old is not None:
            self._local_bytes -= len(old[1])
        if (len(self._local) >= _LOCAL_MAX
                or self._local_bytes + len(body) > _LOCAL_MAX_BYTES):
            now = time.monotonic()
            self._local = {k: v for k, v in self._local.items() if v[0] >= now}
            self._local_bytes = sum(len(v[1]) for v in self._local.values())
            if (len(self._local) >= _LOCAL_MAX
                    or self._local_bytes + len(body) > _LOCAL_MAX_BYTES):
                self._local.clear()
                self._local_bytes = 0
        self._local[key] = (deadline, body)
        self._local_bytes += len(body)
