"""Stage 1 of start-up, before any fork: stores, migrations, the admin token, the sockets.

``prepared(settings)`` starts the embedded stores (only those whose URL is not
configured), applies migrations, creates the admin token on first start and
binds the listening sockets.  It is synchronous (``ExitStack``), not async as
the per-process stage (``runtime/lifecycle.py``) is: a process must not fork
while an event loop runs (the children would inherit its half-shared state),
and every ``--processes`` child shares what this stage made.  A start that
fails half-way unwinds exactly what it had opened, in reverse, and raises
``StartupError`` with one line saying what and why.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Callable, Coroutine, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import tornado.netutil
import uvloop

from server.access.auth import first_admin_token
from server.config import REDIS_CLUSTER_SCHEME, Settings
from server.embedded import EmbeddedPostgres, EmbeddedRedis, EmbeddedStoreError, EmbeddedStores
from server.embedded.lock import using_stores
from server.errors import StoreUnavailable
from server.queue.durability import Durability, read_durability
from server.queue.legacy import adopt_old_keys
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


@contextlib.contextmanager
def stores_ready(settings: Settings, *, redis: bool = True,
                 on_stop: Callable[[EmbeddedStores], None] | None = None) -> Iterator[Stores]:
    """Stores running (embedded ones started) and migrated; embedded ones stopped after.

    While embedded stores are in use, the data directory's lock is held shared
    (``embedded/lock.py``: ``stores stop`` refuses meanwhile).  ``on_stop`` is
    called once the embedded stores are stopped (or left running, as they were
    found), however the block ends.
    """
    embedded = EmbeddedStores(settings.data_dir, postgres=settings.uses_embedded_postgres,
                              redis=redis and settings.uses_embedded_redis,
                              redis_fsync=settings.queue_fsync,
                              redis_maxmemory_bytes=settings.redis_maxmemory_bytes)
    with ExitStack() as stack:
        if embedded.postgres is not None or embedded.redis is not None:
            embedded.may_stop = stack.enter_context(using_stores(settings.data_dir)).alone
        if on_stop is not None:
            stack.callback(on_stop, embedded)
        try:
            stack.enter_context(embedded)
        except EmbeddedStoreError as exc:
            raise StartupError(str(exc)) from exc
        database_url = settings.database_url
        if database_url is None:  # then PostgreSQL is embedded
            assert embedded.postgres is not None
            database_url = embedded.postgres.url
        redis_url = settings.redis_url or (embedded.redis.url if embedded.redis else None)
        try:
            applied = run_sync(apply_migrations(database_url))
        except (MigrationError, StoreUnavailable) as exc:
            raise StartupError(str(exc)) from exc
        if applied:
            log.info("applied migrations: %s", ", ".join(applied))
        if redis_url is not None:
            check_durability(redis_url, settings)
            adopt_old_queue(redis_url, settings)
        yield Stores(database_url, redis_url, embedded, tuple(applied))


def check_durability(redis_url: str, settings: Settings) -> None:
    """Refuse (PROD) or warn about a Redis on which a 202 could be lost."""

    async def read() -> Durability:
        client = redis_client(redis_url, settings, max_connections=1)
        try:
            return await read_durability(client, vouched=settings.redis_durability_vouched)
        finally:
            await client.aclose()

    try:
        durability = run_sync(read())
    except (StoreUnavailable, ValueError) as exc:
        raise StartupError(f"cannot reach Redis to check its durability: {exc}") from exc
    problems = durability.problems(settings.queue_fsync)
    if problems and settings.prod:
        raise StartupError("Redis is not safe for the queue (PROD=true): " + "; ".join(problems))
    for problem in problems:
        log.warning("Redis: %s", problem)
    if durability.appendonly is None and durability.vouched:
        log.info("Redis refuses CONFIG GET; REDIS_DURABILITY_VOUCHED=true: the operator "
                 "vouches for appendonly yes and maxmemory-policy noeviction")


def adopt_old_queue(redis_url: str, settings: Settings) -> None:
    """Points queued under the key names of a version before queue shards go to shard 0
    (``server/queue/legacy.py``); nothing to do on a cluster."""
    if urlsplit(redis_url).scheme == REDIS_CLUSTER_SCHEME:
        return

    async def adopt() -> tuple[int, list[str]]:
        client = redis_client(redis_url, settings, max_connections=1)
        try:
            return await adopt_old_keys(client)
        finally:
            await client.aclose()

    try:
        renamed, both = run_sync(adopt())
    except StoreUnavailable as exc:
        raise StartupError(f"cannot reach Redis to adopt the queue's old keys: {exc}") from exc
    if renamed:
        log.info("adopted %d queue key(s) named before queue shards into shard 0", renamed)
    if both:
        log.error("queue keys held under both their old and their shard-0 names (is an "
                  "older version still running?); the old ones are left: %s", ", ".join(both))


@dataclass(frozen=True)
class Prepared:
    stores: Stores
    sockets: list[socket.socket]
    admin_token: str | None  # created by this start (printed once), else None


@contextlib.contextmanager
def prepared(settings: Settings, *, on_stop: Callable[[EmbeddedStores], None] | None = None
             ) -> Iterator[Prepared]:
    """Stage 1: stores, migrations, admin token, listening sockets (``on_stop``: as
    ``stores_ready``'s)."""
    with ExitStack() as stack:
        stores = stack.enter_context(stores_ready(settings, on_stop=on_stop))
        try:
            admin_token = ensure_admin_token(stores.database_url, settings)
        except StoreUnavailable as exc:
            raise StartupError(str(exc)) from exc
        sockets = bind(settings.address, settings.port, reuse_port=settings.processes > 1)
        for sock in sockets:
            stack.callback(sock.close)
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


