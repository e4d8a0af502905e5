"""Where accepted points go when Redis fails, stalls or its breaker is open: no request
waits out a Redis timeout, and every point is committed exactly once."""

from __future__ import annotations

import asyncio
import time

import pytest

from server.runtime.lifecycle import Service
from server.runtime.prepare import Stores
from tests.support import (
    Api,
    BlackHoleProxy,
    assert_exact,
    batch,
    drained,
    make_settings,
    seed,
    serving,
    sql,
)

FAST_S = 3.0  # REQUEST_STORE_WAIT_S is 1 s; REDIS_TIMEOUT_S here is 6 s


@pytest.mark.parametrize("keyed", [False, True], ids=["ids", "idempotency-key"])
async def test_a_black_holed_redis_costs_an_ingest_request_about_a_second(
        own: Stores, keyed: bool) -> None:
    """The request client's pooled connections go silent: each request that meets one
    gives its ENQUEUE up after REQUEST_STORE_WAIT_S and writes its points to
    PostgreSQL directly (201/202 with ``committed``); nothing is lost or doubled.
    With an Idempotency-Key, the key's record calls are bounded the same way and
    skipped while the breaker is open: still about a second, not three."""
    assert own.redis is not None and own.redis_url is not None
    rd = await BlackHoleProxy("127.0.0.1", own.redis.port).start()  # type: ignore[arg-type]
    url = own.redis_url.replace(f"127.0.0.1:{own.redis.port}", f"127.0.0.1:{rd.port}")
    settings = make_settings(queue_workers=1, redis_timeout_s=6.0, queue_lease_s=3.0)
    accepted: set[str] = set()
    try:
        async with serving(settings, own.database_url, url) as (service, api):
            cid, parts = await seed(api)
            # Several requests at once: the request client holds several connections.
            answers = await asyncio.gather(*(
                api.post("/v1/points", batch(cid, parts, f"before{i}", 50)) for i in range(4)))
            for status, body in answers:
                assert status == 202, body
                accepted |= set(body["ids"])
            rd.blackhole()
            assert rd.blackholed
            direct = 0
            for round_ in range(6):
                started = time.monotonic()
                headers = {"Idempotency-Key": f"after-{round_}"} if keyed else None
                async with asyncio.timeout(30):
                    status, body = await api.post("/v1/points",
                                                  batch(cid, parts, f"after{round_}", 50),
                                                  headers=headers)
                took = time.monotonic() - started
                assert status in (201, 202), body
                assert took < FAST_S, f"request {round_} took {took:.1f} s"
                direct += bool(body.get("committed"))
                accepted |= set(body["ids"])
            assert direct >= 1  # a request did meet a silenced connection, and went around
            await drained(service, len(accepted), own, timeout_s=40)
            assert_exact(own, accepted)
    finally:
        await rd.close()


async def test_while_the_redis_breaker_is_open_ingest_writes_directly_at_once(
        service: Service, api: Api, clean: Stores) -> None:
    cid, parts = await seed(api)
    breaker = service.deps.workers.redis_breaker
    breaker.base_s = breaker.max_s = 3600.0
    breaker.record_failure("test: Redis is away")
    calls = service.deps.queue.enqueue_calls
    status, body = await api.post("/v1/points?ack=committed", batch(cid, parts, "open", 20))
    assert status == 201, body
    assert body["committed"] is True
    assert service.deps.queue.enqueue_calls == calls  # Redis was not asked
    assert sql(clean, "SELECT count(*) FROM points") == [(20,)]
    breaker.record_success()
    status, body = await api.post("/v1/points", batch(cid, parts, "closed", 20))
    assert status == 202, body
    assert "committed" not in body
    assert service.deps.queue.enqueue_calls == calls + 1


async def test_with_wait_replicas_and_no_replica_a_202_is_committed_in_postgres(
        clean: Stores) -> None:
    """QUEUE_WAIT_REPLICAS=1 on a Redis without a replica: no enqueue is confirmed, so
    each request's points go to PostgreSQL directly (202 ``committed``) — a 202 is
    never on one Redis node alone — and their queued copies commit nothing twice."""
    settings = make_settings(queue_workers=1, queue_wait_replicas=1,
                             queue_wait_replicas_ms=50)
    async with serving(settings, clean.database_url, clean.redis_url) as (service, api):
        cid, parts = await seed(api)
        accepted: set[str] = set()
        for round_ in range(3):
            status, body = await api.post("/v1/points", batch(cid, parts, f"w{round_}", 20))
            assert (status, body.get("committed")) == (202, True), body
            accepted.update(body["ids"])
        assert (await service.deps.queue.stats())["totals"]["enqueued"] == 60  # in Redis too
        await drained(service, len(accepted), clean)
        assert_exact(clean, accepted)


async def test_redis_down_and_postgres_silent_a_request_is_refused_within_seconds(
        own: Stores) -> None:
    """Redis is gone, so points go to PostgreSQL directly; then PostgreSQL's link goes
    silent too (no FIN, no RST).  The direct write's BEGIN gets no answer: after
    REQUEST_STORE_WAIT_S the request is 503 "nothing was accepted" — not after the
    30 s statement bound — and it is true: once the link is back, exactly the points
    acknowledged before are stored.  (Found by `run.py bench chaos`: a Redis killed
    while PostgreSQL was black-holed held requests ~30 s.)"""
    assert own.postgres is not None and own.redis is not None and own.redis_url is not None
    pg = await BlackHoleProxy("127.0.0.1", own.postgres.port).start()  # type: ignore[arg-type]
    database_url = own.database_url.replace(f"127.0.0.1:{own.postgres.port}",
                                            f"127.0.0.1:{pg.port}")
    # A cached token outlives the test (its lookup would cost a wait of its own), and
    # the pool's statement bound is the default 30 s.
    settings = make_settings(auth_cache_ttl_s=300.0, pg_pool_max=2)
    try:
        async with serving(settings, database_url, own.redis_url) as (_, api):
            cid, parts = await seed(api)
            own.redis.kill()
            status, body = await api.post("/v1/points", batch(cid, parts, "direct", 5))
            assert (status, body.get("committed")) == (202, True), body
            accepted = set(body["ids"])
            pg.blackhole(hold=True)
            for round_ in range(2):  # the pool's connections are each given up in turn
                started = time.monotonic()
                async with asyncio.timeout(40):
                    status, body = await api.post("/v1/points",
                                                  batch(cid, parts, f"silent{round_}", 5))
                took = time.monotonic() - started
                assert status == 503, body
                assert "nothing was accepted" in body["error"]["message"]
                assert took < FAST_S, f"request {round_} took {took:.1f} s"
        pg.release()
        # Rows, not standings: the service stopped with PostgreSQL silent, so its last
        # fold of the direct write's deltas could not run.
        assert {row[0] for row in sql(own, "SELECT id FROM points")} == accepted
    finally:
        await pg.close()
