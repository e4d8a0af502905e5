"""The request handlers' Redis pool serves its waiters first come, first served.

redis-py's ``BlockingConnectionPool`` lets a late caller take a connection
handed back while an earlier waiter is being woken; that waiter then queues
again at the back, and under contention a few waiters wait out the whole
``REDIS_TIMEOUT_S`` (``server/redis_pool.py``).  Real Redis; a pool of one
connection, so the order is exact.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from server.errors import PoolTimeout
from server.redis_client import redis_client, translated_errors
from server.redis_pool import FairConnectionPool
from server.runtime.prepare import Stores
from tests.support import make_settings, until


def _pool(client: Any) -> FairConnectionPool:
    pool = client.connection_pool
    assert isinstance(pool, FairConnectionPool)
    return pool


async def test_waiters_get_the_connection_in_the_order_they_asked_before_a_late_caller(
        clean: Stores) -> None:
    client = redis_client(clean.redis_url, make_settings(), max_connections=1)
    pool = _pool(client)
    served: list[str] = []

    async def waiter(name: str) -> None:
        connection = await pool.get_connection()
        served.append(name)
        await pool.release(connection)

    try:
        held = await pool.get_connection()
        waiters = []
        for name in ("first", "second", "third"):
            waiters.append(asyncio.create_task(waiter(name)))
            await until(lambda: pool.waiting == len(waiters), f"{name} queued")
        await pool.release(held)
        # The caller that hands the connection back asks again at once, before the
        # woken waiter has run: it must queue behind the three.
        async with asyncio.timeout(5):
            late = await pool.get_connection()
            served.append("late")
            await pool.release(late)
            await asyncio.gather(*waiters)
        assert served == ["first", "second", "third", "late"]
    finally:
        await client.aclose()


async def test_a_wait_that_runs_out_answers_pool_timeout_and_the_pool_loses_nothing(
        clean: Stores) -> None:
    client = redis_client(clean.redis_url, make_settings(redis_timeout_s=0.2),
                          max_connections=1)
    pool = _pool(client)
    try:
        held = await pool.get_connection()
        with pytest.raises(PoolTimeout), translated_errors():
            await client.ping()
        assert pool.waiting == 0
        await pool.release(held)
        # One connection still serves many concurrent callers, none refused.
        async with asyncio.timeout(5):
            assert all(await asyncio.gather(*(client.ping() for _ in range(50))))
        assert pool.waiting == 0 and len(pool._in_use_connections) == 0
    finally:
        await client.aclose()


async def test_a_waiter_cancelled_as_it_is_handed_the_connection_passes_it_on(
        clean: Stores) -> None:
    client = redis_client(clean.redis_url, make_settings(), max_connections=1)
    pool = _pool(client)
    try:
        held = await pool.get_connection()
        first = asyncio.create_task(pool.get_connection())
        await until(lambda: pool.waiting == 1, "first queued")
        second = asyncio.create_task(client.ping())
        await until(lambda: pool.waiting == 2, "second queued")
        await pool.release(held)  # handed to ``first``, which has not run yet
        first.cancel()
        async with asyncio.timeout(5):
            assert await second  # ``first`` passed the connection on
            with pytest.raises(asyncio.CancelledError):
                await first
            assert await client.ping()
        assert pool.waiting == 0 and len(pool._in_use_connections) == 0
    finally:
        await client.aclose()
