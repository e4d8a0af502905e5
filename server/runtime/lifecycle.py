"""The one owner of every long-lived object of a serving process: built in order, closed
in reverse.

``running_service(...)`` is stage 2 of start-up, run in each process on its own
event loop after stage 1 (``runtime/prepare.py``: stores, migrations, admin
token, sockets — before any fork).  In one ``AsyncExitStack`` it opens, in
order:

0. the access log's flush task (``ops/logs.py``);
1. the PostgreSQL pools (the request handlers' and the workers' own, and with
   ``DATABASE_READ_URL`` the read replica's, which only ``ReadReplica`` holds)
   and the Redis clients (likewise);
2. the queue, the commit watch, ingest, caches, auth and the rate limiter;
3. the supervisor and what runs under it — the claim loops and reclaimer
   (``Workers``), the standings folder, the loop monitor, the metrics sampler,
   the replica's lag checks;
4. the readiness probe and the metrics exporter; then ``Deps``, built whole;
5. the HTTP server on the sockets.

Stop, in reverse, within ``SHUTDOWN_TIMEOUT``: ``/health`` turns 503
``draining``, the listener stops accepting and in-flight requests finish;
workers stop claiming, the supervisor waits for every task (claims in hand
finish, the rest is cancelled and handed back), detached settles finish, the
last standings deltas are folded; the commit watch stops; connections close,
Redis then PostgreSQL; the last access lines are written.  The whole stop, the
closes included, takes at most SHUTDOWN_TIMEOUT (and a few tenths): each step
gets what is left of it, and a close that would wait longer (a connection
someone still holds) is cut.
``serving.serve(settings)`` runs both stages (forking for ``--processes``); tests
and the harness start the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack

import tornado.httpserver

from server.access.auth import Authenticator
from server.access.ratelimit import make_limiter
from server.app import make_app
from server.cache import ReadCache
from server.config import Settings
from server.deps import Deps
from server.errors import StoreUnavailable
from server.ingest.accept import Ingest
from server.ingest.commit_watch import CommitWatch
from server.ingest.idempotency import IdempotencyKeys
from server.metrics import flush_requests
from server.ops.dashboard import DashboardSummary
from server.ops.exporter import Exporter, Sampler
from server.ops.idle_bodies import IdleBodies
from server.ops.logs import access_log_flushing, drain_access_log
from server.ops.loop_monitor import LoopMonitor
from server.ops.readiness import ReadinessProbe, ServingState
from server.queue.redis_queue import PointQueue
from server.queue.strategy import make_strategy
from server.queue.worker import Workers
from server.redis_client import redis_client
from server.runtime.listener import Listener
from server.runtime.prepare import bind
from server.storage.database import open_database
from server.storage.replica import ReadReplica
from server.storage.standings import StandingsFolder
from server.supervisor import Supervisor

log = logging.getLogger(__name__)


class Service:
    """A running server: its Deps, its HTTP listener and its port."""

    def __init__(self, deps: Deps, server: tornado.httpserver.HTTPServer, port: int) -> None:
        self.deps = deps
        self.http = server
        self.port = port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class _Deadline:
    """SHUTDOWN_TIMEOUT, counted from the first time anyone asks during the stop."""

    def __init__(self, total_s: float) -> None:
        self.total_s = total_s
        self._end: float | None = None

    def remaining(self) -> float:
        if self._end is None:
            self._end = time.monotonic() + self.total_s
        return max(0.1, self._end - time.monotonic())


@contextlib.asynccontextmanager
async def running_service(settings: Settings, database_url: str, redis_url: str, *,
                          sockets: list[socket.socket] | None = None,
                          workers: int | None = None) -> AsyncIterator[Service]:
    """Stage 2: run the whole service inside the block (``sockets`` default to the
    settings' address and port; ``workers`` to QUEUE_WORKERS)."""
    deadline = _Deadline(settings.shutdown_timeout_s)
    count = settings.queue_workers if workers is None else workers
    async with AsyncExitStack() as stack:
        # The requests counted since the last sample, to the metrics: last of all,
        # after every request has finished, however the stop went.
        stack.callback(flush_requests)
        # 0. The access log's flush task; its last lines are written at the very end
        # of the stop, after the last request has finished.
        await stack.enter_async_context(access_log_flushing())
        stack.push_async_callback(_within, deadline, "the access log", drain_access_log)

        # 1. Connections.  The workers have their own, never shared with request
        # handlers: a burst of requests cannot starve the drain, nor a long drain
        # the requests.
        db = await open_database(settings, database_url)
        stack.push_async_callback(_within, deadline, "the request pools", db.close)
        replica_db = None
        if settings.database_read_url is not None:
            # No connection opened now (PG_POOL_MIN 0 here): a replica that is down
            # stops no start; its reads go to the primary until it answers.
            replica_db = await open_database(settings.replace(pg_pool_min=0),
                                             settings.database_read_url, read_only=True)
            stack.push_async_callback(_within, deadline, "the replica's pool",
                                      replica_db.close)
        reads = ReadReplica(db, replica_db, max_lag_s=settings.database_read_max_lag_s)
        worker_db = await open_database(
            settings.replace(pg_pool_min=1, pg_pool_max=max(count, 1) + 1), database_url)
        stack.push_async_callback(_within, deadline, "the workers' pool", worker_db.close)
        client = redis_client(redis_url, settings)
        stack.push_async_callback(_within, deadline, "the Redis client",
                                  lambda _: client.aclose())
        worker_client = redis_client(redis_url, settings, max_connections=2 * count + 2)
        stack.push_async_callback(_within, deadline, "the workers' Redis client",
                                  lambda _: worker_client.aclose())

        # 2. The request side.
        strategy = make_strategy(settings.ingest_path, settings.queue_batch_size)
        queue = PointQueue(client, strategy, dead_max=settings.dlq_max_entries,
                           dead_max_age_s=settings.dlq_max_age_s,
                           max_points=settings.queue_max_points,
                           call_wait_s=settings.request_store_wait_s,
                           wait_replicas=settings.enqueue_wait_replicas,
                           wait_replicas_ms=settings.queue_wait_replicas_ms,
                           shards=settings.queue_shards)
        commits = CommitWatch(db)
        # After the handlers have stopped.
        stack.push_async_callback(_within, deadline, "the commit watch",
                                  lambda _: commits.close())

        # 3. The background tasks, all under one supervisor.
        supervisor = Supervisor()
        folder = StandingsFolder(worker_db)
        pool = Workers(queue.with_client(worker_client), worker_db, strategy, settings,
                       supervisor, folder)
        loop_monitor = LoopMonitor()
        databases = {"requests": db, "workers": worker_db}
        if replica_db is not None:
            databases["requests-replica"] = replica_db
        sampler = Sampler(databases,
                          {"requests": client, "workers": worker_client},
                          (pool.postgres_breaker, pool.redis_breaker))
        pool.start(count)
        for name, task in (("folder", folder.run), ("loop-monitor", loop_monitor.run),
                           ("metrics", sampler.run)):
            supervisor.start(name, functools.partial(task, supervisor.stop_signal))
        if reads.configured:
            supervisor.start("replica-lag", functools.partial(reads.monitor,
                                                              supervisor.stop_signal))
        stack.push_async_callback(_stop_background, pool, supervisor, folder, deadline)

        # 4. What the handlers read, built whole.
        serving = ServingState()
        auth = Authenticator(db, breaker=pool.postgres_breaker,
                             refusals=make_limiter(client, settings.rate_limit_401_per_address),
                             cache_ttl_s=settings.auth_cache_ttl_s,
                             wait_s=settings.request_store_wait_s)
        stack.push_async_callback(auth.close)  # lookups still running, before the pools
        readiness = ReadinessProbe(db=db, redis=client, queue=queue, workers=pool,
                                   supervisor=supervisor, state=serving, reads=reads,
                                   max_points=settings.queue_max_points,
                                   durability_vouched=settings.redis_durability_vouched)
        bodies = IdleBodies(settings.http_body_idle_s)
        stack.callback(bodies.close)  # once the listener has stopped (pushed later)
        deps = Deps(
            settings=settings, db=db, reads=reads, redis=client, strategy=strategy, queue=queue,
            workers=pool, ingest=Ingest(queue, db, commits, breaker=pool.redis_breaker,
                                       wait_s=settings.request_store_wait_s),
            cache=ReadCache(client),
            auth=auth, serving=serving, readiness=readiness,
            exporter=Exporter(queue, sampler, reads, ingest_path=strategy.name,
                              max_points=settings.queue_max_points),
            loop_monitor=loop_monitor,
            limiter=make_limiter(client, settings.rate_limit_per_token),
            idempotency=IdempotencyKeys(client, ttl_s=settings.idempotency_ttl_s,
                                        lease_s=settings.idempotency_lease_s,
                                        wait_s=settings.request_store_wait_s,
                                        breaker=pool.redis_breaker),
            dashboard=DashboardSummary(readiness=readiness, queue=queue, workers=pool,
                                       reads=reads, loop_monitor=loop_monitor,
                                       sampler=sampler,
                                       results_dir=settings.results_dir,
                                       path=strategy.name),
            bodies=bodies)

        # 5. The listener.
        if sockets is None:
            sockets = bind(settings.address, settings.port)
            stack.callback(_close_sockets, sockets)
        # A body read whole (a route that streams none) must arrive within
        # HTTP_BODY_IDLE_S; streamed bodies are cut when idle that long instead.
        server = Listener(
            make_app(deps), max_body_size=settings.http_body_max_bytes,
            idle_connection_timeout=60, body_timeout=settings.http_body_idle_s)
        server.add_sockets(sockets)
        stack.push_async_callback(_stop_http, server, serving, deadline)
        port = sockets[0].getsockname()[1]
        log.info("serving on %s:%d (ingest path %s, %d workers)", settings.address, port,
                 strategy.name, count)
        yield Service(deps, server, port)
    log.info("stopped")


async def _within(deadline: _Deadline, what: str,
                  close: Callable[[float], Awaitable[None]]) -> None:
    """Close something in what is left of SHUTDOWN_TIMEOUT, which ``close`` is told (a
    pool cuts the connections still out when it runs out); past it, give up on it
    (what it still holds goes with the process)."""
    left = deadline.remaining()
    try:
        await asyncio.wait_for(close(max(0.0, left - 0.1)), left)
    except TimeoutError:
        log.warning("%s not closed within the shutdown deadline", what)


def _close_sockets(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()


async def _stop_http(server: tornado.httpserver.HTTPServer, state: ServingState,
                     deadline: _Deadline) -> None:
    """Drain HTTP: /health says draining, stop accepting, let in-flight requests finish."""
    state.draining = True
    server.stop()
    end = time.monotonic() + deadline.remaining()
    # A counter polled every 20 ms: simpler than an Event per request, and bounded.
    while state.inflight and time.monotonic() < end:  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    try:
        await asyncio.wait_for(server.close_all_connections(), deadline.remaining())
    except TimeoutError:
        log.warning("connections still open at shutdown deadline")


async def _stop_background(workers: Workers, supervisor: Supervisor, folder: StandingsFolder,
                           deadline: _Deadline) -> None:
    """Stop claiming, let every supervised task end (bounded; the rest is cancelled),
    let detached settles finish, then fold the last standings deltas."""
    workers.stop_claiming()
    await supervisor.stop(deadline.remaining())
    await workers.wait_detached(deadline.remaining())
    try:
        await asyncio.wait_for(folder.fold_once(), deadline.remaining())
    except (StoreUnavailable, TimeoutError) as exc:  # the log waits for the next start
        log.warning("final standings fold skipped: %s", exc)
