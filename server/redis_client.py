"""The Redis clients of a process, and the one place redis-py's exceptions enter.

**Clients.**  A bounded pool per client: callers wait (bounded) for a
connection instead of failing, served in arrival order (``redis_pool.py``: redis-py's
``BlockingConnectionPool`` lets late callers overtake a woken waiter, so under
contention a few waited the whole ``REDIS_TIMEOUT_S``).  Every command is bounded by
``REDIS_TIMEOUT_S`` (a link that went silent is given up and its connection
dropped), idle connections are pinged before use, TCP keepalive finds a peer
that vanished, and nothing is retried blindly: the queue's scripts are not
idempotent, so a lost reply is reported, never replayed.

**Cluster.**  ``redis+cluster://[:password@]host:port[,host:port...]`` gives
redis-py's cluster client (``redis.asyncio.cluster.RedisCluster``) over those
seed nodes: it learns the slots, follows MOVED/ASK, and refreshes the topology
after a node fails (a failover).  Its own retries are off, as here: a script
whose reply was lost is reported, not replayed.  ``max_connections`` bounds
each node's pool.  Every key a script touches is passed to it and shares one
hash tag (``server/queue/keys.py``), so each call goes to one node.

**Errors.**  Everything above this module sees domain errors
(``server/errors.py``), never a redis-py type:

* any Redis failure — down, timed out, loading, a read-only replica — is
  ``StoreUnavailable("redis")``: Redis cannot take or give work now;
* this process's pool having no free connection in time is ``PoolTimeout``:
  local congestion, not Redis failing (no breaker opens on it, ingest does not
  go around the queue);
* Redis at ``maxmemory`` is back-pressure, ``QueueFull``;
* an error Redis answered (a command it refuses, a script's own error) is
  ``CommandRefused``;
* a failure after the call was sent — a timeout, a link cut mid-call — is
  ``CommitUnknown("redis")``: the call may or may not have run there.

redis-py raises one type, ``ConnectionError``, for "no pooled connection was
free", "cannot connect" and "the link broke after sending".  They mean
different things to an enqueue — the first two never reached Redis, the last
may have run there — so the pool here raises typed subclasses (``NotSent``,
``PoolExhausted``) at the one place the first two happen: taking a connection,
before anything is sent.  One message is
still read as text: a write inside a Lua script refused at ``maxmemory``
reaches the client as the script's error (Redis 6.2), not as redis-py's
``OutOfMemoryError``.

**Sentinel.**  ``REDIS_URL=redis+sentinel://…`` (``server/sentinel_url.py``)
gives the same bounded, typed pool over redis-py's ``SentinelConnectionPool``:
every client of the process — the request pool, the workers', the rate
limiter's (it shares the request pool), start-up's durability check — talks to
the master the sentinels name, and follows it across a failover.

(The embedded store manager, ``server/embedded/redis.py``, waits for its own
Redis process with redis-py's synchronous client before any of this runs; it
reads that client's errors itself.)
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff

from server.config import REDIS_CLUSTER_SCHEME, Settings, cluster_nodes
from server.errors import (
    CommandRefused,
    CommitUnknown,
    PoolTimeout,
    QueueFull,
    ServiceError,
    StoreUnavailable,
)
from server.redis_pool import FairConnectionPool
from server.sentinel_url import is_sentinel_url, parse_sentinel_url

T = TypeVar("T")


class NotSent(redis.exceptions.ConnectionError):
    """No connection could be had for a call (connect refused, timed out, auth): it
    never reached Redis."""


class PoolExhausted(NotSent):
    """Every connection of this process's pool stayed busy for the whole wait."""


class _Pool(FairConnectionPool):
    """A first-come-first-served bounded pool, raising typed errors where a call
    cannot start."""

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().get_connection(*args, **kwargs)
        except redis.exceptions.RedisError as exc:
            # redis-py chains the pool's own wait running out ("No connection
            # available") from the timeout; a failed connect is not chained so.
            if isinstance(exc.__cause__, TimeoutError):
                raise PoolExhausted(f"no connection was free within {self.timeout}s") from exc
            raise NotSent(str(exc)) from exc


class _SentinelPool(SentinelConnectionPool, _Pool):
    """The sentinels' pool of master connections, bounded and typed as ``_Pool`` is.

    Each new connection asks the sentinels for the master's address; when it
    changed (a failover), idle connections to the old one are dropped, and a
    connection that meets a demoted master (READONLY) drops itself.  The pool
    owns its ``Sentinel`` (the sentinels' own connections) and closes it with
    itself.  A master the sentinels do not name (none yet, mid-failover) is
    ``MasterNotFoundError``, raised while connecting: ``NotSent``.
    """

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            await self.sentinel_manager.aclose()


def redis_client(url: str, settings: Settings, *,
                 max_connections: int | None = None) -> aioredis.Redis:
    """A client over a bounded pool of ``max_connections`` (REDIS_MAX_CONNECTIONS);
    for a ``redis+sentinel://`` URL, a pool of connections to the master the
    sentinels name, followed across failovers; a cluster client (typed as a
    client: the commands used are common to both) for a ``redis+cluster://`` URL."""
    if urlsplit(url).scheme == REDIS_CLUSTER_SCHEME:
        return cast(aioredis.Redis, cluster_client(url, settings,
                                                   max_connections=max_connections))
    options: dict[str, Any] = dict(
        max_connections=max_connections or settings.redis_max_connections,
        timeout=settings.redis_timeout_s, socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s, socket_keepalive=True,
        health_check_interval=5, retry=Retry(NoBackoff(), 0),
    )
    if is_sentinel_url(url):
        return _sentinel_client(url, settings, options)
    pool = _Pool.from_url(url, **options)
    return aioredis.Redis.from_pool(pool)  # the client owns (and closes) the pool


def _sentinel_client(url: str, settings: Settings, options: dict[str, Any]) -> aioredis.Redis:
    target = parse_sentinel_url(url)
    sentinels = Sentinel(
        target.sentinels,
        # Asked without a password; each query bounded like any Redis call.  One
        # that fails is skipped: the next sentinel is asked.
        sentinel_kwargs=dict(socket_timeout=settings.redis_timeout_s,
                             socket_connect_timeout=settings.redis_timeout_s,
                             socket_keepalive=True),
    )
    # master_for hands the pool class these options; the client owns (and closes)
    # the pool, and the pool its sentinels.
    return sentinels.master_for(
        target.service_name, connection_pool_class=_SentinelPool, db=target.db,
        username=target.username, password=target.password, **options)


def cluster_client(url: str, settings: Settings, *,
                   max_connections: int | None = None) -> RedisCluster:
    nodes, username, password = cluster_nodes(url)
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in nodes],
        username=username, password=password,
        max_connections=max_connections or settings.redis_max_connections,
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s, socket_keepalive=True,
        retry=Retry(NoBackoff(), 0),  # never replay: see the module's docstring
    )


def pool_usage(client: aioredis.Redis) -> tuple[int, int, int]:
    """(in use, idle, waiting) of a client's pool, for ``/metrics``.

    redis-py keeps these in private attributes (stable from 5.0 to 8.x); they
    are read defensively, so a version that renames them reports zeros rather
    than failing a scrape.
    """
    pool = getattr(client, "connection_pool", None)  # a cluster client has one per node
    in_use = len(getattr(pool, "_in_use_connections", ()))
    idle = len(getattr(pool, "_available_connections", ()))
    waiting = pool.waiting if isinstance(pool, FairConnectionPool) else 0
    return in_use, idle, waiting


# --- errors ---------------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _out_of_memory(exc: redis.exceptions.RedisError) -> bool:
    return isinstance(exc, redis.exceptions.OutOfMemoryError) or (
        isinstance(exc, redis.exceptions.ResponseError)
        and "OOM command not allowed" in str(exc))  # from inside a script (see above)


# A cluster that is failing over (no primary for a slot yet): answered, never run.
_CLUSTER_UNSERVED = (redis.exceptions.ClusterDownError, redis.exceptions.TryAgainError,
                     redis.exceptions.MasterDownError)
# The cluster client's own errors (no node reachable, a slot no node covers) are no
# RedisError: they are raised before anything is sent.
REDIS_ERRORS = (redis.exceptions.RedisError, redis.exceptions.RedisClusterException)


def domain_error(exc: Exception) -> ServiceError:
    """The domain meaning of a redis-py exception."""
    if not isinstance(exc, redis.exceptions.RedisError):  # the cluster client's own
        return StoreUnavailable("redis", "the Redis Cluster cannot serve the call now",
                                reason=_first_line(exc))
    if isinstance(exc, PoolExhausted | redis.exceptions.MaxConnectionsError):
        return PoolTimeout("redis", "no Redis connection was free in time; retry shortly")
    if isinstance(exc, _CLUSTER_UNSERVED):  # refused before running: nothing applied
        return StoreUnavailable("redis", "the Redis Cluster cannot serve the call now",
                                reason=_first_line(exc))
    if _out_of_memory(exc):
        return QueueFull("Redis is at its memory limit; retry shortly")
    if isinstance(exc, redis.exceptions.ResponseError):
        return CommandRefused("redis", "Redis refused a command", reason=_first_line(exc))
    if _maybe_applied(exc):
        return CommitUnknown("redis", "Redis failed after the call was sent, which may "
                                      "or may not have run", reason=_first_line(exc))
    return StoreUnavailable("redis", "Redis is unavailable", reason=_first_line(exc))


def _maybe_applied(exc: redis.exceptions.RedisError) -> bool:
    """Whether a failed call may still have run on the server (its reply was lost).

    A call that never got a connection did not; nor did one Redis refused (an
    error reply, still loading).  A timeout or a link lost after sending may have.
    """
    if isinstance(exc, NotSent | redis.exceptions.BusyLoadingError):
        return False
    return isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError)


@contextlib.contextmanager
def translated_errors() -> Iterator[None]:
    """redis-py's exceptions become domain errors (``domain_error``) in this block."""
    try:
        yield
    except REDIS_ERRORS as exc:
        raise domain_error(exc) from exc


def translated(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Run a coroutine function under ``translated_errors``."""

    @functools.wraps(method)
    async def wrapper(*args: Any, **kwargs: Any) -> T:
        with translated_errors():
            return await method(*args, **kwargs)

    return wrapper
