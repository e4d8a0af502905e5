"""Read caches: one query per key per refill however many read at once; an error or
a cancelled reader is shared fairly; with Redis away the same holds in-process."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
import tornado.httpclient
import tornado.ioloop

from server import cache as cache_module
from server.cache import ReadCache
from server.config import Settings
from server.embedded import free_port
from server.queue.keys import CACHE_PREFIX
from server.redis_client import redis_client
from server.runtime.lifecycle import Service
from server.runtime.prepare import Stores
from tests.support import TOKENS, Api, locked, make_settings, running, seed, until

# The leaderboard query as PostgreSQL shows it (``running``): the competition id
# follows, inline.
LEADERBOARD = "WHERE s.competition_id = "


@pytest.fixture
def settings() -> Settings:
    """Caching does not depend on the ingest path: one run is enough."""
    return make_settings()


class AnsweredGets:
    """A cache's Redis client that counts the GETs it has had answered (or failed).

    The sync point for "every reader has missed and joined a computation": in
    ``ReadCache.get_or_compute`` nothing is awaited between a GET's answer and the
    reader joining (or starting) the computation for its key.
    """

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.answered = 0

    async def get(self, key: str) -> Any:
        try:
            return await self.client.get(key)
        finally:
            self.answered += 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


async def joined(cache: ReadCache, reads: int) -> None:
    """Wait until ``reads`` reads have had their Redis GET answered: each has joined
    (or started) the computation for its key by then."""
    gets = cache.redis
    assert isinstance(gets, AnsweredGets)
    await until(lambda: gets.answered >= reads, f"{reads} reads past Redis")


def refills(stores: Stores) -> list[int]:
    """The competitions whose leaderboard PostgreSQL is computing now."""
    return sorted(int(re.search(r"competition_id = (\d+)", query)[1])  # type: ignore[index]
                  for query in running(stores, LEADERBOARD))


async def storm(service: Service, stores: Stores, paths: list[str]
                ) -> tuple[list[int], list[tornado.httpclient.HTTPResponse]]:
    """GET every path at once while the refill is held, so that every read misses.

    A lock on ``standings`` holds the leaderboard query (as a heavy query or a busy
    database would) until every request has had its Redis GET answered (a miss) and
    so has joined the computation for its key, and until each key's computation is
    in PostgreSQL; then the lock goes and all answers are collected.  Returns the
    competitions whose leaderboard PostgreSQL was asked for meanwhile (once every
    reader has joined, no other query can follow), and the answers.
    """

    def held() -> list[int] | None:
        asked = refills(stores)
        return asked if len(asked) >= len(set(paths)) else None

    await service.deps.auth.identify(f"Bearer {TOKENS['read']}")  # no storm of lookups
    cache = service.deps.cache
    cache.redis = AnsweredGets(cache.redis)  # type: ignore[assignment]
    http = tornado.httpclient.AsyncHTTPClient(force_instance=True, max_clients=len(paths))
    try:
        with locked(stores, "standings"):
            fetches = [asyncio.ensure_future(http.fetch(
                service.url + path, headers={"Authorization": f"Bearer {TOKENS['read']}"},
                raise_error=False, request_timeout=60)) for path in paths]
            await joined(cache, len(paths))
            asked = await until(held, "every key's refill held by the lock")
        responses = await asyncio.gather(*fetches)
    finally:
        cache.redis = cache.redis.client  # type: ignore[attr-defined]
        http.close()
    return asked, responses


async def test_a_storm_of_reads_after_expiry_costs_one_query_per_refill(
        api: Api, service: Service, clean: Stores) -> None:
    cid, _ = await seed(api)
    path = f"/v1/competitions/{cid}/leaderboard"
    assert (await api.get(path, token="read"))[0] == 200  # cached for LEADERBOARD_TTL_S

    async def expired() -> bool:
        # The in-process copy's deadline comes before the Redis copy's: gone too.
        return not await service.deps.redis.keys(f"{CACHE_PREFIX}lb:{cid}:*")

    for _refill in range(2):
        await until(expired, "the cached board to expire")
        asked, answers = await storm(service, clean, [path] * 200)
        assert asked == [cid]  # one query, not 200
        assert {(r.code, r.body) for r in answers} == {(200, answers[0].body)}  # one answer


async def test_storms_on_two_keys_cost_one_query_per_key(
        api: Api, service: Service, clean: Stores) -> None:
    first, _ = await seed(api)
    status, second = await api.post("/v1/competitions", {"slug": "plate", "name": "The Plate"})
    assert status == 201
    paths = [f"/v1/competitions/{cid}/leaderboard" for cid in (first, second["id"])] * 100
    asked, answers = await storm(service, clean, paths)
    assert asked == sorted([first, second["id"]])
    assert {r.code for r in answers} == {200}
    bodies = {r.body for r in answers}  # one answer (one as_of) per key
    assert sorted(orjson.loads(b)["competition_id"] for b in bodies) == asked


# --- the cache alone, on the session's Redis (or none) ---------------------------


@pytest.fixture
def cache(clean: Stores, io_loop: tornado.ioloop.IOLoop) -> Iterator[ReadCache]:
    assert clean.redis_url is not None
    client = redis_client(clean.redis_url, make_settings())
    yield ReadCache(AnsweredGets(client))  # type: ignore[arg-type]
    io_loop.run_sync(client.aclose)


@pytest.fixture
def cache_without_redis(io_loop: tornado.ioloop.IOLoop) -> Iterator[ReadCache]:
    """A cache whose Redis refuses every connection (nothing listens on its port)."""
    client = redis_client(f"redis://127.0.0.1:{free_port()}/0",
                          make_settings(redis_timeout_s=1.0))
    yield ReadCache(AnsweredGets(client))  # type: ignore[arg-type]
    io_loop.run_sync(client.aclose)


class Computation:
    """A compute function that counts its calls and waits for ``release`` (unless
    ``released``)."""

    def __init__(self, result: Any = None, error: Exception | None = None,
                 released: bool = False) -> None:
        self.calls = 0
        self.finished = 0
        self.release = asyncio.Event()
        if released:
            self.release.set()
        self.result = {"n": 1} if result is None else result
        self.error = error

    async def __call__(self) -> Any:
        self.calls += 1
        await self.release.wait()
        self.finished += 1
        if self.error is not None:
            raise self.error
        return self.result


def readers(cache: ReadCache, compute: Callable[[], Awaitable[Any]], n: int,
            key: str = "k") -> list[asyncio.Future[bytes]]:
    return [asyncio.ensure_future(cache.get_or_compute(key, 30, compute)) for _ in range(n)]


async def test_an_error_reaches_every_waiter_and_is_not_cached(cache: ReadCache) -> None:
    failing = Computation(error=LookupError("no competition 7"))
    waiting = readers(cache, failing, 20)
    await joined(cache, 20)
    assert failing.calls == 1
    failing.release.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert failing.calls == 1
    assert all(isinstance(r, LookupError) and str(r) == "no competition 7" for r in results)
    working = Computation(released=True)
    assert await cache.get_or_compute("k", 30, working) == b'{"n":1}'
    assert working.calls == 1  # the error was not cached: the next read computed afresh


async def test_a_cancelled_first_caller_neither_cancels_nor_strands_the_others(
        cache: ReadCache) -> None:
    slow = Computation()
    first = asyncio.ensure_future(cache.get_or_compute("k", 30, slow))
    await until(lambda: slow.calls == 1, "the first caller to start the computation")
    others = readers(cache, slow, 10)
    await joined(cache, 11)
    assert slow.calls == 1  # the others joined it
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    slow.release.set()
    assert await asyncio.gather(*others) == [b'{"n":1}'] * 10
    assert first.cancelled() and (slow.calls, slow.finished) == (1, 1)
    never = Computation(error=AssertionError("the value was not cached"), released=True)
    assert await cache.get_or_compute("k", 30, never) == b'{"n":1}'


async def test_with_redis_away_reads_share_one_computation_and_its_result(
        cache_without_redis: ReadCache) -> None:
    slow = Computation()
    waiting = readers(cache_without_redis, slow, 20)
    await joined(cache_without_redis, 20)
    slow.release.set()
    assert await asyncio.gather(*waiting) == [b'{"n":1}'] * 20
    assert slow.calls == 1
    never = Computation(error=AssertionError("the value was not kept in-process"),
                        released=True)
    assert await cache_without_redis.get_or_compute("k", 30, never) == b'{"n":1}'


def test_the_in_process_copy_is_bounded_in_bytes() -> None:
    # Clients choose the keys (every page of every leaderboard): entries alone
    # would not bound memory.  One 1 MiB body under ever more keys: the map counts
    # every copy, the test holds one.
    bound = cache_module._LOCAL_MAX_BYTES
    body = b"x" * (1 << 20)
    local = ReadCache(None)  # type: ignore[arg-type]  # the in-process map only
    far = time.monotonic() + 60
    for n in range(bound // len(body) + 10):
        local._local_put(f"page:{n}", body, far)
        assert local._local_bytes == sum(len(b) for _, b in local._local.values()) <= bound
    assert local._local_get(f"page:{n}") is body
