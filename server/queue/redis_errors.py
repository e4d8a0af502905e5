"""Where redis-py's exceptions enter the queue and become domain errors.

Any Redis failure — down, timed out, loading, a read-only replica — means the
same to callers: the queue cannot take or give work now (``StoreUnavailable``).
A full queue or a Redis at ``maxmemory`` is back-pressure (``QueueFull``); this
process's own pool being busy is local congestion (``PoolTimeout``).  Whether a
failed call may still have run on the server decides whether an enqueue's
points are "not accepted" or "unknown".
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import redis.exceptions

from server.errors import PoolTimeout, QueueFull, ServiceError, StoreUnavailable

T = TypeVar("T")


def domain_error(exc: redis.exceptions.RedisError) -> ServiceError:
    """The domain meaning of a Redis failure."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "OOM command not allowed" in text:
        return QueueFull("Redis is at its memory limit; retry shortly")
    if "No connection available" in text:  # this process's pool, not Redis, is busy
        return PoolTimeout("redis", "no Redis connection was free in time; retry shortly")
    return StoreUnavailable("redis", f"Redis is unavailable ({text})")


def queue_full(queued: int, bound: int) -> QueueFull:
    return QueueFull(f"the queue is full ({queued} of {bound} points queued); retry shortly")


def maybe_applied(exc: redis.exceptions.RedisError) -> bool:
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
        raise domain_error(exc) from exc


def translated(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Run a queue operation under ``translated_errors``."""

    @functools.wraps(method)
    async def wrapper(*args: Any, **kwargs: Any) -> T:
        with translated_errors():
            return await method(*args, **kwargs)

    return wrapper
