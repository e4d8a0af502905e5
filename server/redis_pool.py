"""The Redis clients of a process: bounded pools with timeouts, never blind retries."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from server.config import Settings


def redis_client(url: str, settings: Settings, *,
                 max_connections: int | None = None) -> aioredis.Redis:
    """A bounded pool: callers wait (bounded) for a connection instead of failing.

    Every command is bounded by ``REDIS_TIMEOUT_S`` (a link that went silent is
    given up and its connection dropped), idle connections are pinged before use,
    TCP keepalive finds a peer that vanished, and nothing is retried blindly:
    the queue's scripts are not idempotent, so a lost reply is reported, never
    replayed.
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections or settings.redis_max_connections,
        timeout=settings.redis_timeout_s, socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s, socket_keepalive=True,
        health_check_interval=5, retry=Retry(NoBackoff(), 0),
    )
    return aioredis.Redis.from_pool(pool)  # the client owns (and closes) the pool
