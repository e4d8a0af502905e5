"""The GCRA limiter itself: the Redis script, its in-process twin, keys that expire,
a bounded fallback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis
import tornado.ioloop

from server.access.ratelimit import REDIS_WAIT_S, RateLimiter, gcra
from server.config import Settings
from server.embedded import free_port
from server.errors import RateLimited
from server.queue.keys import RATE_LIMIT_PREFIX
from server.redis_client import redis_client
from server.runtime.prepare import Stores
from tests.support import BlackHoleProxy

TOKEN = b"\x01" * 32


@pytest.fixture
def client(clean: Stores, io_loop: tornado.ioloop.IOLoop) -> Iterator[aioredis.Redis]:
    assert clean.redis_url is not None
    redis = redis_client(clean.redis_url, Settings())
    yield redis
    io_loop.run_sync(redis.aclose)


@pytest.fixture
def limiter(client: aioredis.Redis) -> RateLimiter:
    return RateLimiter(client, 5.0)  # a burst of 10, then one every 200 ms


def test_in_process_twin_lets_the_burst_through_then_paces() -> None:
    interval, tolerance, tat, now = 100, 300, 0, 10_000  # a burst of 3
    answers = []
    for _ in range(5):
        new_tat, remaining, retry, reset = gcra(tat, now, interval, tolerance)
        answers.append((new_tat is not None, remaining, retry, reset))
        tat = new_tat if new_tat is not None else tat
    assert answers == [(True, 2, 0, 100), (True, 1, 0, 200), (True, 0, 0, 300),
                       (False, 0, 100, 300), (False, 0, 100, 300)]
    # One interval later exactly one more passes.
    assert gcra(tat, now + interval, interval, tolerance)[0] is not None
    assert gcra(tat + interval, now + interval, interval, tolerance)[0] is None


async def test_the_script_lets_exactly_the_burst_through(limiter: RateLimiter) -> None:
    decisions = [await limiter.check(TOKEN) for _ in range(12)]
    assert [d.allowed for d in decisions] == [True] * 10 + [False] * 2
    assert [d.remaining for d in decisions[:10]] == list(range(9, -1, -1))
    refused = decisions[-1]
    assert 0 < refused.retry_after_s <= 0.2 and 1.8 < refused.reset_s <= 2.0
    assert limiter.local_decisions == 0
    with pytest.raises(RateLimited) as caught:
        await limiter.admit(TOKEN)
    assert (caught.value.limit, caught.value.remaining) == (10, 0)


async def test_a_tokens_key_expires_once_it_is_at_rest(limiter: RateLimiter,
                                                       client: aioredis.Redis) -> None:
    await limiter.check(TOKEN)
    key = RATE_LIMIT_PREFIX + TOKEN.hex()
    assert 0 < await client.pttl(key) <= 200  # one interval: then it is at rest
    # Stored as whole microseconds, not a rounded float ("1.7e+15").
    assert (await client.get(key)).isdigit()


async def test_without_redis_the_fallback_limits_and_its_dict_stays_bounded() -> None:
    client = redis_client(f"redis://127.0.0.1:{free_port()}", Settings())  # nothing there
    try:
        limiter = RateLimiter(client, 1.0, local_max=4)
        for n in range(10):
            await limiter.admit(bytes([n]) * 32)
        assert len(limiter._local) <= 4
        last = bytes([9]) * 32
        await limiter.admit(last)  # its burst of 2…
        with pytest.raises(RateLimited):
            await limiter.admit(last)  # …is spent
        assert limiter.local_decisions == 12 and limiter.refused == 1
    finally:
        await client.aclose()


async def test_a_silent_redis_holds_a_decision_for_at_most_the_short_wait(
        clean: Stores) -> None:
    # A black-holed link answers nothing: the decision still comes within
    # REDIS_WAIT_S (not REDIS_TIMEOUT_S, 5 s), in-process, and the next ones
    # do not ask Redis again for REDIS_RETRY_S.
    assert clean.redis is not None and clean.redis.port is not None
    proxy = await BlackHoleProxy("127.0.0.1", clean.redis.port).start()
    redis = redis_client(proxy.url(f"redis://:{clean.redis.password}@127.0.0.1:{{port}}/0"),
                         Settings())
    try:
        limiter = RateLimiter(redis, 100)
        assert (await limiter.check(TOKEN)).allowed and limiter.local_decisions == 0
        proxy.blackhole()  # the pooled connection goes silent
        started = time.monotonic()
        assert (await limiter.check(TOKEN)).allowed
        assert time.monotonic() - started < REDIS_WAIT_S + 1.0
        assert limiter.local_decisions == 1
        started = time.monotonic()  # within REDIS_RETRY_S: in-process, no wait at all
        decisions = await asyncio.gather(*(limiter.check(TOKEN) for _ in range(20)))
        assert time.monotonic() - started < REDIS_WAIT_S
        assert all(d.allowed for d in decisions) and limiter.local_decisions == 21
    finally:
        await redis.aclose()
        await proxy.close()
