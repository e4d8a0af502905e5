"""The one owner of every runtime resource: start in order, stop in reverse.

Order: PostgreSQL pool → Redis client → queue and workers → HTTP listener.
Stop (SIGTERM/SIGINT or leaving the context): ``/health`` turns 503 ``draining``,
the listener stops accepting, in-flight requests finish (bounded), workers finish
their claim and hand back the rest, then Redis and PostgreSQL pools close.
Everything is bounded by ``SHUTDOWN_TIMEOUT``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
import tornado.httpserver
import tornado.netutil

from server.app import Deps, LifecycleState, make_app
from server.auth import Authenticator
from server.cache import ReadCache
from server.config import Settings
from server.ingest import Ingest
from server.queue.paths import make_path
from server.queue.redis_queue import PointQueue
from server.queue.worker import Workers
from server.storage.database import open_database

log = logging.getLogger(__name__)
# A burst of a thousand simultaneous connections must queue in the kernel, not be
# reset: tornado's default backlog is 128 (the kernel caps this at somaxconn).
LISTEN_BACKLOG = 4096


def redis_client(url: str, settings: Settings) -> aioredis.Redis:
    """A bounded pool: callers wait (bounded) for a connection instead of failing."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=settings.redis_max_connections,
        timeout=5,
        socket_timeout=10,
        socket_connect_timeout=5,
        health_check_interval=30,
    )
    return aioredis.Redis.from_pool(pool)  # the client owns (and closes) the pool


class Service:
    """A running server: its Deps, its HTTP listener and its port."""

    def __init__(self, deps: Deps, server: tornado.httpserver.HTTPServer, port: int) -> None:
        self.deps = deps
        self.http = server
        self.port = port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@asynccontextmanager
async def running_service(
    settings: Settings,
    database_url: str,
    redis_url: str,
    *,
    sockets: list[socket.socket] | None = None,
    workers: int | None = None,
) -> AsyncIterator[Service]:
    """Run the whole service inside the block; ``sockets`` default to settings' port."""
    db = await open_database(settings, database_url, settings.database_read_url)
    client = redis_client(redis_url, settings)
    path = make_path(settings.ingest_path, settings.queue_batch_size)
    queue = PointQueue(client, path, dead_max=settings.dlq_max_entries,
                       dead_max_age_s=settings.dlq_max_age_s)
    pool = Workers(queue, db, path, settings)
    state = LifecycleState()
    deps = Deps(settings=settings, db=db, redis=client, path=path, queue=queue, workers=pool,
                ingest=Ingest(queue, db), cache=ReadCache(client), auth=Authenticator(db),
                lifecycle=state)
    server = tornado.httpserver.HTTPServer(
        make_app(deps), max_body_size=1 << 20, idle_connection_timeout=60,
    )
    if sockets is None:
        sockets = tornado.netutil.bind_sockets(settings.port, settings.address,
                                                   backlog=LISTEN_BACKLOG)
    server.add_sockets(sockets)
    port = sockets[0].getsockname()[1]
    pool.start(settings.queue_workers if workers is None else workers)
    log.info("serving on %s:%d (ingest path %s, %d workers)", settings.address, port,
             path.name, settings.queue_workers if workers is None else workers)
    try:
        yield Service(deps, server, port)
    finally:
        deadline = time.monotonic() + settings.shutdown_timeout_s
        state.draining = True
        server.stop()
        # A counter polled every 20 ms: simpler than an Event per request, and bounded.
        while state.inflight and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        await pool.stop(max(0.1, deadline - time.monotonic()))
        try:
            await asyncio.wait_for(server.close_all_connections(),
                                   max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            log.warning("connections still open at shutdown deadline")
        await client.aclose()
        await db.close()
        log.info("stopped")
