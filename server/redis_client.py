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


def pool_usage(client: aioredis.Redis) -> tuple[int, int, int]:
    """(in use, idle, waiting) of a client's pool, for ``/metrics``.

    redis-py keeps these in private attributes (stable from 5.0 to 8.x); they
    are read defensively, so a version that renames them reports zeros rather
    than failing a scrape.
    """
    pool = client.connection_pool
    in_use = len(getattr(pool, "_in_use_connections", ()))
    idle = len(getattr(pool, "_available_connections", ()))
    waiting = 0
    condition = getattr(pool, "_condition", None)  # BlockingConnectionPool only
    if condition is not None:
        # Waiting for a connection to come back, or for the condition's lock.
        lock = getattr(condition, "_lock", None)
        waiting = len(getattr(condition, "_waiters", None) or ()) + len(
            getattr(lock, "_waiters", None) or ())
    return in_use, idle, waiting
