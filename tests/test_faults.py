"""Fault injection on the tests' own store instances: outages cost time, never points.

Each test starts its own embedded PostgreSQL and Redis (never the shared
session stores), stops, kills or terminates them mid-ingest, and then asserts
exact counts through SQL.  Every loop here is bounded in count and time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
import tornado.httpclient
import tornado.ioloop

from server.auth import hash_token
from server.config import Settings
from server.lifecycle import Service, Stores, running_service, stores_ready
from tests.conftest import TOKENS, Api, assert_exact, make_settings, seed
from tests.conftest import sql as run_sql


@pytest.fixture
def own(tmp_path: Path) -> Iterator[Stores]:
    """This test's own PostgreSQL and Redis, to stop, kill and restart at will."""
    with stores_ready(Settings(data_dir=tmp_path)) as stores:
        run_sql(stores, "INSERT INTO api_tokens (token_hash, role, name) "
                        "VALUES (%s, 'admin', 'a')", hash_token(TOKENS["admin"]))
        yield stores


def start(io_loop: tornado.ioloop.IOLoop, stores: Stores, **overrides: object):
    settings = make_settings(**{"queue_workers": 2, "queue_lease_s": 3.0, **overrides})
    context = running_service(settings, stores.database_url, stores.redis_url)
    service = io_loop.run_sync(context.__aenter__)
    return service, context


@pytest.fixture
def faulty(own: Stores, io_loop: tornado.ioloop.IOLoop) -> Iterator[tuple[Service, Api]]:
    service, context = start(io_loop, own)
    api = Api(service.url)
    yield service, api
    api.http.close()
    io_loop.run_sync(lambda: context.__aexit__(None, None, None))


async def drained(service: Service, expected: int, stores: Stores, timeout_s: float = 60
                  ) -> None:
    """Wait (bounded) until the queue is empty and ``expected`` points are committed."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        try:
            stats = await service.deps.queue.stats()
            count = run_sql(stores, "SELECT count(*) FROM points")[0][0]
            unfolded = run_sql(stores, "SELECT count(*) FROM standing_deltas")[0][0]
        except Exception:  # a store may still be coming back
            count, stats, unfolded = -1, {}, -1
        if (count == expected and stats.get("depth") == 0 and stats.get("inflight") == 0
                and unfolded == 0):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not drained: {count} committed of {expected}, {stats}")


def batch(cid: int, parts: list[int], tag: str, n: int = 100) -> dict:
    return {"points": [{"id": f"{tag}-{i}", "competition_id": cid,
                        "participant_id": parts[i % len(parts)], "value": 1}
                       for i in range(n)]}


async def test_postgres_stopped_mid_ingest_every_request_202_and_drained_after(
        faulty: tuple[Service, Api], own: Stores) -> None:
    service, api = faulty
    cid, parts = await seed(api)
    accepted: set[str] = set()
    for round_ in range(10):
        if round_ == 4:
            await asyncio.to_thread(own.postgres.stop, even_if_reused=True)
        status, body = await api.post("/v1/points", batch(cid, parts, f"r{round_}"))
        assert status == 202, body
        accepted.update(body["ids"])
        await asyncio.sleep(0.05)
    assert (await service.deps.queue.stats())["depth"] > 0  # waiting, not lost
    await asyncio.to_thread(own.postgres.start)
    started = asyncio.get_running_loop().time()
    await drained(service, len(accepted), own)
    assert_exact(own, accepted)
    # Draining resumed promptly once PostgreSQL answered again.
    assert asyncio.get_running_loop().time() - started < 5


async def test_redis_killed_mid_ingest_every_2xx_committed_exactly_once(
        faulty: tuple[Service, Api], own: Stores) -> None:
    service, api = faulty
    cid, parts = await seed(api)
    accepted: set[str] = set()
    direct = 0
    for round_ in range(10):
        if round_ == 4:
            own.redis.kill()
        status, body = await api.post("/v1/points", batch(cid, parts, f"k{round_}"))
        assert status == 202, body
        direct += bool(body.get("committed"))
        accepted.update(body["ids"])
    assert direct >= 5  # written straight to PostgreSQL while Redis was down
    status, ready = await api.get("/ready", token=None)
    assert (status, ready["status"]) == (200, "degraded")
    await asyncio.to_thread(own.redis.start)  # AOF replays what Redis had acknowledged
    await drained(service, len(accepted), own)
    assert_exact(own, accepted)


async def test_terminated_backends_cause_no_client_error_and_no_double_count(
        faulty: tuple[Service, Api], own: Stores) -> None:
    service, api = faulty
    cid, parts = await seed(api)
    stop = asyncio.Event()
    terminated = 0

    def terminate() -> int:
        conn = psycopg2.connect(own.database_url)
        try:
            with conn, conn.cursor() as cur:
                cur.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE application_name = 'points-server'")
                return cur.fetchone()[0]
        finally:
            conn.close()

    async def killer() -> None:
        nonlocal terminated
        while not stop.is_set():
            terminated += await asyncio.to_thread(terminate)
            await asyncio.sleep(0.05)

    task = asyncio.create_task(killer())
    accepted: set[str] = set()
    try:
        for round_ in range(20):
            status, body = await api.post("/v1/points", batch(cid, parts, f"t{round_}", 50))
            assert status == 202, body
            accepted.update(body["ids"])
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        await task
    assert terminated > 0
    await drained(service, len(accepted), own)
    assert_exact(own, accepted)


async def test_a_thousand_concurrent_requests_on_a_pool_of_two_get_2xx_or_503(
        own: Stores) -> None:
    settings = make_settings(pg_pool_min=1, pg_pool_max=2, pg_connect_timeout_s=1.0)
    context = running_service(settings, own.database_url, own.redis_url)
    service = await context.__aenter__()
    client = tornado.httpclient.AsyncHTTPClient(force_instance=True, max_clients=1000)
    try:
        async def create(i: int) -> int:
            response = await client.fetch(
                f"{service.url}/v1/competitions", method="POST", raise_error=False,
                body=b'{"slug": "c%d", "name": "n"}' % i, request_timeout=60,
                headers={"Authorization": f"Bearer {TOKENS['admin']}",
                         "Content-Type": "application/json"})
            return response.code

        codes = await asyncio.wait_for(asyncio.gather(*(create(i) for i in range(1000))), 90)
    finally:
        client.close()
        await context.__aexit__(None, None, None)
    assert set(codes) <= {201, 503}, sorted(set(codes))
    created = run_sql(own, "SELECT count(*) FROM competitions")[0][0]
    assert created == codes.count(201) > 0


async def test_idle_connections_cut_by_the_server_are_replaced_before_use(
        faulty: tuple[Service, Api], own: Stores) -> None:
    service, api = faulty
    await seed(api)
    service.deps.db.preping_idle_s = 0  # ping every reused connection
    await asyncio.to_thread(run_sql, own, "SELECT pg_terminate_backend(pid) FROM "
                            "pg_stat_activity WHERE application_name = 'points-server'")
    for _ in range(3):  # every pooled connection was cut; none may fail a request
        status, body = await api.get("/v1/competitions", token="admin")
        assert status == 200 and len(body["items"]) == 1


async def test_both_stores_down_answers_503_with_retry_after_and_accepts_nothing(
        faulty: tuple[Service, Api], own: Stores) -> None:
    service, api = faulty
    cid, parts = await seed(api)  # the token is now verified (and cached) by this process
    own.redis.kill()
    await asyncio.to_thread(own.postgres.stop, even_if_reused=True)
    status, body = await api.post("/v1/points", batch(cid, parts, "lost", 5))
    assert status == 503, body
    assert body["error"]["code"] == "unavailable" and "nothing was accepted" in \
        body["error"]["message"]
    status, ready = await api.get("/ready", token=None)
    assert (status, ready["status"]) == (503, "unavailable")
    await asyncio.to_thread(own.postgres.start)
    await asyncio.to_thread(own.redis.start)
    await drained(service, 0, own)
    assert_exact(own, set())


async def test_health_turns_draining_while_shutdown_waits_for_in_flight_requests(
        own: Stores) -> None:
    settings = make_settings(queue_workers=0, ack_timeout_s=1.5)
    context = running_service(settings, own.database_url, own.redis_url)
    service = await context.__aenter__()
    api = Api(service.url)
    try:
        cid, parts = await seed(api)
        # A keep-alive connection opened before the stop, to ask /health during it.
        reader, writer = await asyncio.open_connection("127.0.0.1", service.port)

        async def health() -> bytes:
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            return head.split(b"\r\n")[0]

        assert await health() == b"HTTP/1.1 200 OK"
        # In flight: waits for a commit that cannot happen (no workers) for 1.5 s.
        slow = asyncio.ensure_future(api.post(
            "/v1/points?ack=committed", {"competition_id": cid, "participant_id": parts[0],
                                         "value": 1}))
        await asyncio.sleep(0.2)
        stopping = asyncio.ensure_future(context.__aexit__(None, None, None))
        await asyncio.sleep(0.2)
        assert await health() == b"HTTP/1.1 503 Service Unavailable"
        assert not stopping.done()  # still waiting for the in-flight request
        status, body = await slow
        assert (status, body["committed"]) == (202, False)  # answered, not cut off
        await asyncio.wait_for(stopping, 10)
        writer.close()
    finally:
        api.http.close()
        if not service.deps.lifecycle.draining:
            await context.__aexit__(None, None, None)
