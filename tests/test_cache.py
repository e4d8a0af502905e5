"""Read caches: one query per key per refill however many read at once; an error or
a cancelled reader is shared fairly; with Redis away the same holds in-process."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiopg.connection
import orjson
import psycopg2
import pytest
import tornado.httpclient
import tornado.ioloop

from server import cache as cache_module
from server.access import auth
from server.cache import ReadCache
from server.config import Settings
from server.embedded import free_port
from server.handlers.reads import LEADERBOARD_TTL_S
from server.redis_client import redis_client
from server.runtime.lifecycle import Service
from server.runtime.prepare import Stores
from server.storage import reads
from tests.support import TOKENS, Api, make_settings, seed


@pytest.fixture
def settings() -> Settings:
    """Caching does not depend on the ingest path: one run is enough."""
    return make_settings()


@pytest.fixture
def leaderboard_queries(monkeypatch: pytest.MonkeyPatch) -> Counter[int]:
    """Leaderboard statements sent to PostgreSQL, by competition id.

    Counted at the cursor (aiopg's ``Cursor.execute``), which every statement of
    this process goes through: what is counted is what PostgreSQL was asked.
    """
    sent: Counter[int] = Counter()
    execute = aiopg.connection.Cursor.execute

    async def counting(self: Any, operation: str, parameters: Any = None, **kw: Any) -> None:
        if operation == reads.LEADERBOARD:
            sent[parameters["competition"]] += 1
        await execute(self, operation, parameters, **kw)

    monkeypatch.setattr(aiopg.connection.Cursor, "execute", counting)
    return sent


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.fixture
def token_verified_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A verified token stays verified for the whole test: no storm's request waits
    for a token lookup (behind a pool that blocked refills may hold)."""
    monkeypatch.setattr(auth, "CACHE_TTL_S", 300.0)


async def storm(service: Service, stores: Stores, paths: list[str]) -> list[bytes]:
    """GET every path at once while the refill is slow, so that every read misses.

    A lock on ``standings`` holds the leaderboard query (as a heavy query or a busy
    database would) until every request has reached the cache and had its Redis
    GET answered; then the lock goes and all answers are collected.
    """
    await service.deps.auth.identify(f"Bearer {TOKENS['read']}")
    cache, reached = service.deps.cache, 0
    get_or_compute = cache.get_or_compute

    async def counted(*args: Any) -> bytes:
        nonlocal reached
        reached += 1
        return await get_or_compute(*args)

    http = tornado.httpclient.AsyncHTTPClient(force_instance=True, max_clients=len(paths))
    blocker = psycopg2.connect(stores.database_url)
    cache.get_or_compute = counted  # type: ignore[method-assign]
    try:
        with blocker.cursor() as cur:
            cur.execute("LOCK TABLE standings IN ACCESS EXCLUSIVE MODE")
        fetches = [asyncio.ensure_future(http.fetch(
            service.url + path, headers={"Authorization": f"Bearer {TOKENS['read']}"},
            raise_error=False, request_timeout=60)) for path in paths]
        await until(lambda: reached == len(paths), f"{len(paths)} reads at the cache")
        await asyncio.sleep(0.3)  # their Redis GETs (all misses) are answered by now
    finally:
        blocker.rollback()
        blocker.close()
        del cache.get_or_compute
    try:
        responses = await asyncio.gather(*fetches)
    finally:
        http.close()
    assert [r.code for r in responses] == [200] * len(paths), responses[0].body
    return [r.body for r in responses]


async def test_a_storm_of_reads_after_expiry_costs_one_query_per_refill(
        api: Api, service: Service, clean: Stores, leaderboard_queries: Counter[int],
        token_verified_once: None) -> None:
    cid, _ = await seed(api)
    path = f"/v1/competitions/{cid}/leaderboard"
    assert (await api.get(path, token="read"))[0] == 200
    assert leaderboard_queries[cid] == 1
    for refill in (2, 3):
        await asyncio.sleep(LEADERBOARD_TTL_S + 0.2)  # the cached board expires
        bodies = await storm(service, clean, [path] * 200)
        assert leaderboard_queries[cid] == refill  # one more query, not 200
        assert len(set(bodies)) == 1  # and every reader got that one answer


async def test_storms_on_two_keys_cost_one_query_per_key(
        api: Api, service: Service, clean: Stores, leaderboard_queries: Counter[int],
        token_verified_once: None) -> None:
    first, _ = await seed(api)
    status, second = await api.post("/v1/competitions", {"slug": "plate", "name": "The Plate"})
    assert status == 201
    paths = [f"/v1/competitions/{cid}/leaderboard" for cid in (first, second["id"])] * 100
    bodies = await storm(service, clean, paths)
    assert leaderboard_queries == {first: 1, second["id"]: 1}
    assert len(set(bodies)) == 2
    assert {orjson.loads(b)["competition_id"] for b in bodies} == {first, second["id"]}


# --- the cache alone, on the session's Redis (or none) ---------------------------


@pytest.fixture
def cache(clean: Stores, io_loop: tornado.ioloop.IOLoop) -> Iterator[ReadCache]:
    assert clean.redis_url is not None
    client = redis_client(clean.redis_url, make_settings())
    yield ReadCache(client)
    io_loop.run_sync(client.aclose)


@pytest.fixture
def cache_without_redis(io_loop: tornado.ioloop.IOLoop) -> Iterator[ReadCache]:
    """A cache whose Redis refuses every connection (nothing listens on its port)."""
    client = redis_client(f"redis://127.0.0.1:{free_port()}/0",
                          make_settings(redis_timeout_s=1.0))
    yield ReadCache(client)
    io_loop.run_sync(client.aclose)


class Computation:
    """A compute function that counts its calls and waits for ``release``."""

    def __init__(self, result: Any = None, error: Exception | None = None) -> None:
        self.calls = 0
        self.finished = 0
        self.release = asyncio.Event()
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
    await asyncio.sleep(0.3)  # every reader has missed and joined
    failing.release.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert failing.calls == 1
    assert all(isinstance(r, LookupError) and str(r) == "no competition 7" for r in results)
    working = Computation()
    working.release.set()
    assert await cache.get_or_compute("k", 30, working) == b'{"n":1}'
    assert working.calls == 1  # the error was not cached: the next read computed afresh


async def test_a_cancelled_first_caller_neither_cancels_nor_strands_the_others(
        cache: ReadCache) -> None:
    slow = Computation()
    first = asyncio.ensure_future(cache.get_or_compute("k", 30, slow))
    await asyncio.sleep(0.1)
    assert slow.calls == 1  # the first caller started the computation
    others = readers(cache, slow, 10)
    await asyncio.sleep(0.3)
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    slow.release.set()
    assert await asyncio.gather(*others) == [b'{"n":1}'] * 10
    assert first.cancelled() and (slow.calls, slow.finished) == (1, 1)
    never = Computation(error=AssertionError("the value was cached"))
    assert await cache.get_or_compute("k", 30, never) == b'{"n":1}'


async def test_with_redis_away_reads_share_one_computation_and_its_result(
        cache_without_redis: ReadCache) -> None:
    slow = Computation()
    waiting = readers(cache_without_redis, slow, 20)
    await asyncio.sleep(0.3)
    slow.release.set()
    assert await asyncio.gather(*waiting) == [b'{"n":1}'] * 20
    assert slow.calls == 1
    never = Computation(error=AssertionError("the value was not kept in-process"))
    assert await cache_without_redis.get_or_compute("k", 30, never) == b'{"n":1}'


def test_the_in_process_copy_is_bounded_in_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    # Clients choose the keys (every page of every leaderboard): entries alone
    # would not bound memory.
    monkeypatch.setattr(cache_module, "_LOCAL_MAX_BYTES", 10_000)
    local = ReadCache(None)  # type: ignore[arg-type]  # the in-process map only
    far = time.monotonic() + 60
    for n in range(100):
        local._local_put(f"page:{n}", b"x" * 1_000, far)
        assert local._local_bytes == sum(len(b) for _, b in local._local.values()) <= 10_000
    assert local._local_get("page:99") == b"x" * 1_000
