"""Read caches: Redis first (shared by every process), in-process when Redis fails.

Values are JSON-ready dicts stored with orjson and a TTL.  A Redis error never
fails a read: the value is computed and kept in a small in-process TTL map
instead, so leaderboards stay fast when Redis is away.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import redis.asyncio as aioredis
import redis.exceptions

from server.queue.keys import CACHE_PREFIX

_LOCAL_MAX = 10_000


class ReadCache:
    def __init__(self, client: aioredis.Redis) -> None:
        self.redis = client
        self._local: dict[str, tuple[float, bytes]] = {}

    async def get_or_compute(self, key: str, ttl_s: float,
                             compute: Callable[[], Awaitable[Any]]) -> bytes:
        """Return the cached JSON body for ``key`` or compute, store and return it."""
        full_key = CACHE_PREFIX + key
        try:
            cached = await self.redis.get(full_key)
            redis_ok = True
        except redis.exceptions.RedisError:
            cached, redis_ok = self._local_get(full_key), False
        if cached is not None:
            return cached
        body = orjson.dumps(await compute())
        if redis_ok:
            try:
                await self.redis.set(full_key, body, px=max(1, int(ttl_s * 1000)))
                return body
            except redis.exceptions.RedisError:
                pass
        self._local_put(full_key, body, ttl_s)
        return body

    def _local_get(self, key: str) -> bytes | None:
        hit = self._local.get(key)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    def _local_put(self, key: str, body: bytes, ttl_s: float) -> None:
        if len(self._local) >= _LOCAL_MAX:
            now = time.monotonic()
            self._local = {k: v for k, v in self._local.items() if v[0] >= now}
            if len(self._local) >= _LOCAL_MAX:
                self._local.clear()
        self._local[key] = (time.monotonic() + ttl_s, body)
