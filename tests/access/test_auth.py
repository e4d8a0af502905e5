"""Token checks that neither a store outage nor a flood of made-up tokens can stall.

Queries are observed in PostgreSQL itself: ``locked`` holds ``api_tokens`` and
``lock_waiters`` counts the lookups waiting on it, so "no query" and "one query"
are read from the store, not from our own counters.  Black-holed links come
from ``BlackHoleProxy`` (bytes swallowed, no FIN, no RST).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from server.access.auth import generate_token
from server.queue.breaker import CLOSED, HALF_OPEN
from server.runtime.lifecycle import Service
from server.runtime.prepare import Stores
from tests.support import (
    TOKENS,
    Api,
    BlackHoleProxy,
    batch,
    lock_waiters,
    locked,
    make_settings,
    seed,
    serving,
    until,
)

# A request must answer within this while PostgreSQL does not (REQUEST_STORE_WAIT_S
# is 1 s; the pool's and the statement's timeouts are 10 s and more).
FAST_S = 3.0


def through(proxy: BlackHoleProxy, url: str, port: int | None) -> str:
    """``url`` with the store's port replaced by the proxy's (credentials kept)."""
    assert port is not None and f"127.0.0.1:{port}" in url
    return url.replace(f"127.0.0.1:{port}", f"127.0.0.1:{proxy.port}")


async def timed(api: Api, method: str, path: str, **kwargs: object) -> tuple[int, object, float]:
    started = time.monotonic()
    async with asyncio.timeout(30):
        status, body = await api.request(method, path, **kwargs)  # type: ignore[arg-type]
    return status, body, time.monotonic() - started


async def test_a_black_holed_postgres_costs_a_request_with_a_cached_token_about_a_second(
        own: Stores) -> None:
    """Every request looks its token up (AUTH_CACHE_TTL_S=0): the first one after the
    black hole waits REQUEST_STORE_WAIT_S and answers from the cached entry; the
    others find that lookup overdue (or the breaker open) and answer at once."""
    assert own.postgres is not None and own.redis_url is not None
    pg = await BlackHoleProxy("127.0.0.1", own.postgres.port).start()  # type: ignore[arg-type]
    settings = make_settings(auth_cache_ttl_s=0.0, pg_statement_timeout_ms=10_000,
                             pg_pool_max=2)
    try:
        async with serving(settings, through(pg, own.database_url, own.postgres.port),
                           own.redis_url) as (_, api):
            cid, parts = await seed(api)
            pg.blackhole()
            assert pg.blackholed
            for round_ in range(5):
                status, body, took = await timed(api, "POST", "/v1/points",
                                                 json=batch(cid, parts, f"b{round_}", 10))
                assert status == 202, body
                assert took < FAST_S, f"request {round_} took {took:.1f} s"
    finally:
        await pg.close()


@pytest.mark.parametrize("settings", [{"auth_cache_ttl_s": 0.0, "pg_pool_max": 10}],
                         indirect=True)
async def test_a_flood_of_unknown_tokens_never_evicts_a_known_one(
        service: Service, api: Api, clean: Stores) -> None:
    """More made-up tokens than either of the caches holds, then a PostgreSQL that does
    not answer (``api_tokens`` held): the known token still works from its outage
    grace.  (Every request looks its token up: AUTH_CACHE_TTL_S=0.)"""
    cid, parts = await seed(api)  # the admin token is known now
    auth = service.deps.auth
    flood = 10_001
    # As many at a time as the pool has connections: none waits for one, and each
    # lookup answers well within REQUEST_STORE_WAIT_S even on a loaded machine.
    for start in range(0, flood, 10):
        results = await asyncio.gather(
            *(auth.identify(f"Bearer {generate_token()}")
              for _ in range(min(10, flood - start))), return_exceptions=True)
        assert all(type(r).__name__ == "NotAuthenticated" for r in results), {
            repr(r) for r in results}
    with locked(clean, "api_tokens"):
        status, body, took = await timed(api, "POST", "/v1/points",
                                         json=batch(cid, parts, "after", 10))
        assert status == 202, body
        assert took < FAST_S
        assert lock_waiters(clean) == 1  # it was looked up, and answered without


async def test_while_the_postgres_breaker_is_open_an_unverified_token_gets_503_at_once(
        service: Service, api: Api, clean: Stores) -> None:
    breaker = service.deps.workers.postgres_breaker
    breaker.base_s = breaker.max_s = 3600.0
    breaker.record_failure("test: PostgreSQL is away")
    with locked(clean, "api_tokens"):  # a lookup would wait here, and be seen waiting
        for _ in range(3):
            status, body, took = await timed(api, "GET", "/v1/admin/queue", token="admin")
            assert status == 503, body
            assert body["error"]["code"] == "unavailable"  # type: ignore[index]
            assert took < 1.0
        assert lock_waiters(clean) == 0
    breaker.record_success()


@pytest.mark.parametrize("settings", [{"auth_cache_ttl_s": 0.0}], indirect=True)
async def test_while_the_postgres_breaker_is_open_a_stale_token_is_not_looked_up(
        service: Service, api: Api, clean: Stores) -> None:
    breaker = service.deps.workers.postgres_breaker
    status, body = await api.get("/v1/admin/queue", token="admin")  # known, and stale at once
    assert status == 200, body
    breaker.base_s = breaker.max_s = 3600.0
    breaker.record_failure("test: PostgreSQL is away")
    with locked(clean, "api_tokens"):
        for _ in range(3):
            status, body, took = await timed(api, "GET", "/v1/admin/queue", token="admin")
            assert status == 200, body
            assert took < 1.0
        assert lock_waiters(clean) == 0
    breaker.record_success()


@pytest.mark.parametrize("settings", [{"auth_cache_ttl_s": 0.0}], indirect=True)
async def test_a_half_open_postgres_breaker_refreshes_a_stale_token_in_the_background(
        service: Service, api: Api, clean: Stores) -> None:
    breaker = service.deps.workers.postgres_breaker
    status, body = await api.get("/v1/admin/queue", token="admin")  # known, and stale at once
    assert status == 200, body
    breaker.record_failure("test: PostgreSQL was away")
    breaker._open_until = 0  # its cool-down is over: half-open, the next caller probes
    with locked(clean, "api_tokens"):
        status, body, took = await timed(api, "GET", "/v1/admin/queue", token="admin")
        assert status == 200, body
        assert took < 1.0  # answered from the entry, not after the probe
        await until(lambda: lock_waiters(clean) == 1, "the probe's lookup to wait")
        assert breaker.state == HALF_OPEN
    await until(lambda: breaker.state == CLOSED, "the probe to close the breaker")


async def test_an_ill_formed_token_is_refused_before_any_query(
        service: Service, api: Api, clean: Stores) -> None:
    ill_formed = ["pts_short", "pts_" + "x" * 42 + "!", "pts_" + "x" * 44, "x" * 47,
                  TOKENS["admin"].replace("pts_", "PTS_"), "pts_" + "é" * 43]
    with locked(clean, "api_tokens"):  # any lookup would wait here
        for token in ill_formed:
            status, body, took = await timed(api, "GET", "/v1/competitions", token=token)
            assert status == 401, (token, body)
            assert body["error"]["code"] == "unauthorized"  # type: ignore[index]
            assert took < 1.0
        assert lock_waiters(clean) == 0


async def test_one_lookup_per_token_in_flight_and_unknown_tokens_remembered(
        service: Service, api: Api, clean: Stores) -> None:
    token = generate_token()  # well formed, never issued
    with locked(clean, "api_tokens"):
        async with asyncio.timeout(10):
            answers = await asyncio.gather(*(api.get("/v1/competitions", token=token)
                                             for _ in range(10)))
        # Not verifiable within REQUEST_STORE_WAIT_S: 503, and one lookup waits.
        assert {status for status, _ in answers} == {503}, answers
        assert lock_waiters(clean) == 1
    await until(lambda: lock_waiters(clean) == 0, "the lookup to land")
    status, body = await api.get("/v1/competitions", token=token)
    assert status == 401, body
    with locked(clean, "api_tokens"):  # remembered as unknown: no query
        status, body, took = await timed(api, "GET", "/v1/competitions", token=token)
        assert (status, took < 1.0) == (401, True), body
        assert lock_waiters(clean) == 0


@pytest.mark.parametrize("settings", [{"rate_limit_401_per_address": 0.5}], indirect=True)
async def test_401s_beyond_the_per_address_limit_answer_429(
        service: Service, api: Api, clean: Stores) -> None:
    status, body = await api.get("/v1/competitions", token="read")  # verified: known
    assert status == 200, body
    # One 401 every 2 s, bursts of 1: the first passes, the next (well within 2 s) is 429.
    status, body = await api.get("/v1/competitions", token=generate_token())
    assert status == 401, body
    response = await api.response("GET", "/v1/competitions", token=generate_token())
    assert response.code == 429, response.body
    assert float(response.headers["Retry-After"]) > 0
    assert b'"rate_limited"' in response.body
    # A token this process has verified, from the same address, is never held up...
    status, body = await api.get("/v1/competitions", token="read")
    assert status == 200, body
    # ...while an unknown one is answered 429 before any lookup.
    with locked(clean, "api_tokens"):
        status, body, took = await timed(api, "GET", "/v1/competitions",
                                         token=generate_token())
        assert (status, took < 1.0) == (429, True), body
        assert lock_waiters(clean) == 0


@pytest.mark.parametrize("settings", [{"rate_limit_401_per_address": 0.5}], indirect=True)
async def test_ready_counts_unknown_tokens_against_the_per_address_limit(
        service: Service, api: Api, clean: Stores) -> None:
    """/ready answers any token with its public view, but an unknown one still counts
    as a 401 of its address: /ready is no way around the limit's lookups."""
    status, body = await api.get("/ready", token=generate_token())
    assert status == 200 and "checks" not in body, body  # the public answer
    status, body = await api.get("/v1/competitions", token=generate_token())
    assert status == 429, body  # the /ready lookup spent the address's burst
    with locked(clean, "api_tokens"):  # limited: no lookup, still the public answer
        status, body, took = await timed(api, "GET", "/ready", token=generate_token())
        assert (status, "checks" in body, took < 1.0) == (200, False, True), body
        assert lock_waiters(clean) == 0
