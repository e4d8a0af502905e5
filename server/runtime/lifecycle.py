"""The one owner of every resource's lifetime: started in order, stopped in reverse.

Two stages, each a context manager over an exit stack, so that a start that
fails half-way unwinds exactly what it had opened, in reverse:

1. **Before the fork** — ``prepared(settings)``: the embedded stores (only those
   whose URL is not configured), migrations, the admin token on first start, the
   listening sockets.  It is synchronous (``ExitStack``), not async as the
   per-process stage is: a process must not fork while an event loop runs (the
   children would inherit its half-shared state), and every ``--processes``
   child shares what this stage made.
2. **Per process** — ``running_service(...)``: PostgreSQL pools, the Redis
   client, the queue, the supervised workers, the HTTP server
   (``AsyncExitStack``).  Stop: ``/health`` turns 503 ``draining``, the listener
   stops accepting, in-flight requests finish, workers finish their claim and
   hand back the rest, connections close, then Redis and PostgreSQL — all
   within ``SHUTDOWN_TIMEOUT``.

``serving.serve(settings)`` runs both (forking for ``--processes``); ``cli.py``
only parses and calls.  Tests and the harness start the same way.  A start that
fails raises ``StartupError`` with one line saying what and why.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import redis.exceptions
import tornado.httpserver
import tornado.netutil
import uvloop

from server import metrics
from server.access.auth import Authenticator, first_admin_token
from server.access.ratelimit import make_limiter
from server.app import Deps, LifecycleState, make_app
from server.cache import ReadCache
from server.config import Settings
from server.embedded import EmbeddedPostgres, EmbeddedRedis, EmbeddedStoreError, EmbeddedStores
from server.errors import StoreUnavailable
from server.ingest.accept import Ingest
from server.queue.durability import Durability, read_durability
from server.queue.redis_queue import PointQueue
from server.queue.strategy import make_path
from server.queue.worker import Workers
from server.redis_client import redis_client
from server.storage.database import open_database
from server.storage.migrate import MigrationError, apply_migrations

log = logging.getLogger(__name__)
T = TypeVar("T")

# A burst of a thousand simultaneous connections must queue in the kernel, not be
# reset: tornado's default backlog is 128 (the kernel caps this at somaxconn).
LISTEN_BACKLOG = 4096
ADMIN_TOKEN_FILE = "admin-token"


class StartupError(Exception):
    """The service could not start; the message is one line for the operator."""


@dataclass(frozen=True)
class Stores:
    """Where the stores are, and the embedded servers behind them (if any)."""

    database_url: str
    redis_url: str | None
    embedded: EmbeddedStores
    migrations_applied: tuple[str, ...] = ()

    @property
    def postgres(self) -> EmbeddedPostgres | None:
        return self.embedded.postgres

    @property
    def redis(self) -> EmbeddedRedis | None:
        return self.embedded.redis


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run start-up I/O to completion on a private loop (never the caller's)."""
    loop = uvloop.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


# --- stage 1: before the fork ----------------------------------------------------


@contextlib.contextmanager
def stores_ready(settings: Settings, *, redis: bool = True) -> Iterator[Stores]:
    """Stores running (embedded ones started) and migrated; embedded ones stopped after."""
    embedded = EmbeddedStores(settings.data_dir, postgres=settings.uses_embedded_postgres,
                              redis=redis and settings.uses_embedded_redis,
                              redis_fsync=settings.queue_fsync,
                              redis_maxmemory_bytes=settings.redis_maxmemory_bytes)
    with ExitStack() as stack:
        try:
            stack.enter_context(embedded)
        except EmbeddedStoreError as exc:
            raise StartupError(str(exc)) from exc
        database_url = settings.database_url or embedded.postgres.url  # type: ignore[union-attr]
        redis_url = settings.redis_url or (embedded.redis.url if embedded.redis else None)
        try:
            applied = run_sync(apply_migrations(database_url))
        except (MigrationError, StoreUnavailable) as exc:
            raise StartupError(str(exc)) from exc
        if applied:
            log.info("applied migrations: %s", ", ".join(applied))
        if redis_url is not None:
            check_durability(redis_url, settings)
        yield Stores(database_url, redis_url, embedded, tuple(applied))


def check_durability(redis_url: str, settings: Settings) -> None:
    """Refuse (PROD) or warn about a Redis on which a 202 could be lost."""

    async def read() -> Durability:
        client = redis_client(redis_url, settings, max_connections=1)
        try:
            return await read_durability(client)
        finally:
            await client.aclose()

    try:
        durability = run_sync(read())
    except (redis.exceptions.RedisError, ValueError) as exc:
        raise StartupError(f"cannot reach Redis to check its durability: {exc}") from exc
    problems = durability.problems(settings.queue_fsync)
    if problems and settings.prod:
        raise StartupError("Redis is not safe for the queue (PROD=true): " + "; ".join(problems))
    for problem in problems:
        log.warning("Redis: %s", problem)


@dataclass(frozen=True)
class Prepared:
    stores: Stores
    sockets: list[socket.socket]
    admin_token: str | None  # created by this start (printed once), else None


@contextlib.contextmanager
def prepared(settings: Settings) -> Iterator[Prepared]:
    """Stage 1: stores, migrations, admin token, listening sockets."""
    with ExitStack() as stack:
        stores = stack.enter_context(stores_ready(settings))
        try:
            admin_token = ensure_admin_token(stores.database_url, settings)
        except StoreUnavailable as exc:
            raise StartupError(str(exc)) from exc
        sockets = bind(settings.address, settings.port, reuse_port=settings.processes > 1)
        stack.callback(lambda: [sock.close() for sock in sockets])
        yield Prepared(stores, sockets, admin_token)


def bind(address: str, port: int, *, reuse_port: bool = False) -> list[socket.socket]:
    try:
        return tornado.netutil.bind_sockets(port, address, reuse_port=reuse_port,
                                            backlog=LISTEN_BACKLOG)
    except OSError as exc:
        raise StartupError(f"cannot listen on {address}:{port}: "
                           f"{exc.strerror or exc}") from exc


def ensure_admin_token(database_url: str, settings: Settings) -> str | None:
    """On first start, create an admin token: printed once, stored in a 0600 file."""
    token_file = Path(settings.data_dir) / ADMIN_TOKEN_FILE
    if token_file.exists():
        return None

    async def create() -> str | None:
        db = await open_database(settings.replace(pg_pool_min=1, pg_pool_max=1),
                                 database_url)
        try:
            return await first_admin_token(db)
        finally:
            await db.close()

    token = run_sync(create())
    if token is not None:
        token_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(token + "\n")
        print(f"admin token (shown once; also stored in {token_file}, mode 0600):\n"
              f"  {token}", flush=True)
    return token


# --- stage 2: one process ---------------------------------------------------------


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
        db = await open_database(settings, database_url, settings.database_read_url)
        stack.push_async_callback(db.close)
        # The workers' own connections, never shared with request handlers: a burst
        # of requests cannot starve the drain, nor a long drain the requests.
        worker_db = await open_database(
            settings.replace(pg_pool_min=1, pg_pool_max=max(count, 1) + 1), database_url)
        stack.push_async_callback(worker_db.close)
        client = redis_client(redis_url, settings)
        stack.push_async_callback(client.aclose)
        worker_client = redis_client(redis_url, settings, max_connections=2 * count + 2)
        stack.push_async_callback(worker_client.aclose)
        path = make_path(settings.ingest_path, settings.queue_batch_size)
        queue = PointQueue(client, path, dead_max=settings.dlq_max_entries,
                           dead_max_age_s=settings.dlq_max_age_s,
                           max_points=settings.queue_max_points)
        pool = Workers(queue.with_client(worker_client), worker_db, path, settings)
        state = LifecycleState()
        deps = Deps(settings=settings, db=db, redis=client, path=path, queue=queue,
                    workers=pool, ingest=Ingest(queue, db), cache=ReadCache(client),
                    auth=Authenticator(db), lifecycle=state,
                    limiter=make_limiter(client, settings.rate_limit_per_token))
        stack.push_async_callback(deps.ingest.commits.close)  # after the handlers stop
        if sockets is None:
            sockets = bind(settings.address, settings.port)
            stack.callback(lambda: [sock.close() for sock in sockets])  # type: ignore[union-attr]
        pool.start(count)
        # Each process keeps its pool and breaker gauges current for /metrics.
        pool.supervisor.start("metrics", functools.partial(metrics.sample_forever, deps,
                                                           lambda: pool.stopping))
        stack.push_async_callback(lambda: pool.stop(deadline.remaining()))
        server = tornado.httpserver.HTTPServer(make_app(deps), max_body_size=1 << 20,
                                               idle_connection_timeout=60)
        server.add_sockets(sockets)
        stack.push_async_callback(_stop_http, server, state, deadline)
        port = sockets[0].getsockname()[1]
        log.info("serving on %s:%d (ingest path %s, %d workers)", settings.address, port,
                 path.name, count)
        yield Service(deps, server, port)
    log.info("stopped")


async def _stop_http(server: tornado.httpserver.HTTPServer, state: LifecycleState,
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
