"""Fault injection on the tests' own store instances: outages cost time, never points.

Each test starts its own embedded PostgreSQL and Redis (``own``: never the
shared session stores), stops, kills or terminates them mid-ingest, and then
asserts exact counts through SQL.  Every wait raises when it runs out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import orjson
import psycopg2
import pytest
import redis
import tornado.httpclient
import tornado.ioloop

from server.access.auth import hash_token
from server.points import KeyedIds
from server.queue import keys
from server.queue.chunks import Chunk
from server.runtime.lifecycle import Service, running_service
from server.runtime.prepare import Stores
from tests.support import (
    TOKENS,
    Api,
    BlackHoleProxy,
    assert_exact,
    batch,
    drained,
    make_settings,
    seed,
    serving,
    until,
    until_sync,
)
from tests.support import sql as run_sql


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
    api.close()
    io_loop.run_sync(lambda: context.__aexit__(None, None, None))


async def assert_no_attempt_spent(service: Service) -> None:
    """Store outages are nobody's fault: no point was retried or dead-lettered."""
    totals = (await service.deps.queue.stats())["totals"]
    assert (totals["retried"], totals["dead_lettered"]) == (0, 0)
    stats = service.deps.workers.stats
    assert (stats.points_retried, stats.points_dead, stats.given_up) == (0, 0, 0)


async def enqueued(service: Service, points: int) -> None:
    """Wait until the queue has taken ``points`` points in all (an upload under way)."""

    async def taken() -> bool:
        return (await service.deps.queue.stats())["totals"]["enqueued"] >= points

    await until(taken, f"{points} points enqueued")


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
        await asyncio.sleep(0.05)  # a pace, not a sync: workers drain between requests
    assert (await service.deps.queue.stats())["depth"] > 0  # waiting, not lost
    # Two handbacks (the first one's release has landed by the second), none of
    # them counted against the chunks while the outage lasts.
    await until(lambda: service.deps.workers.stats.handbacks >= 2, "claims handed back")
    assert await service.deps.redis.hlen(keys.HANDBACKS) == 0
    await asyncio.to_thread(own.postgres.start)
    started = asyncio.get_running_loop().time()
    await drained(service, len(accepted), own)
    assert_exact(own, accepted)
    # Draining resumed promptly once PostgreSQL answered again.
    assert asyncio.get_running_loop().time() - started < 5
    assert service.deps.workers.stats.handbacks > 0  # the outage did reach the workers…
    await assert_no_attempt_spent(service)  # …and cost the points nothing


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
    await assert_no_attempt_spent(service)


async def test_redis_down_an_id_taken_by_other_content_answers_409_and_writes_nothing(
        faulty: tuple[Service, Api], own: Stores) -> None:
    _, api = faulty
    cid, (a, b, _) = await seed(api)
    first = {"id": "judge-7", "competition_id": cid, "participant_id": a, "value": 8}
    assert (await api.post("/v1/points?ack=committed", first))[0] == 201
    own.redis.kill()
    # The direct write: an identical resend is a no-op 2xx; other content is a 409,
    # whatever the ack mode, and its request-mates are not written either.
    status, body = await api.post("/v1/points", first)
    assert (status, body.get("committed")) == (202, True), body
    for ack in ("queued", "committed"):
        status, body = await api.post(f"/v1/points?ack={ack}", {"points": [
            {"id": "fresh", "competition_id": cid, "participant_id": b, "value": 1},
            {**first, "participant_id": b}]})
        assert status == 409, body
        assert body["error"]["code"] == "id_conflict" and "'judge-7'" in body["error"]["message"]
        assert [(d["index"], d["field"]) for d in body["error"]["details"]] == [(1, "id")]
    # An upload's conflict is named by its line (the 3rd), not by an index in a chunk.
    lines = [{"id": f"u{i}", "competition_id": cid, "participant_id": b, "value": 1}
             for i in range(2)] + [{**first, "value": 9}]
    status, body = await api.post("/v1/points/bulk", content_type="application/x-ndjson",
                                  body=b"\n".join(orjson.dumps(line) for line in lines))
    assert status == 409, body
    assert [(d.get("line"), d.get("index")) for d in body["error"]["details"]] == [(3, None)]
    assert run_sql(own, "SELECT id, participant_id, value FROM points") == [("judge-7", a, 8.0)]


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
    await assert_no_attempt_spent(service)


async def test_a_thousand_concurrent_requests_on_a_pool_of_two_get_2xx_or_503(
        own: Stores) -> None:
    settings = make_settings(pg_pool_min=1, pg_pool_max=2, pg_connect_timeout_s=1.0,
                             redis_max_connections=2, queue_workers=2)
    async with serving(settings, own.database_url, own.redis_url) as (service, api):
        cid, parts = await seed(api)
        client = tornado.httpclient.AsyncHTTPClient(force_instance=True, max_clients=1000)
        headers = {"Authorization": f"Bearer {TOKENS['admin']}",
                   "Content-Type": "application/json"}
        try:
            async def send(i: int) -> tuple[str, int, dict]:
                # Half create competitions (PostgreSQL), half ingest points (Redis).
                if i % 2:
                    path, body = "/v1/competitions", {"slug": f"c{i}", "name": "n"}
                else:
                    path, body = "/v1/points", batch(cid, parts, f"s{i}", 5)
                response = await client.fetch(f"{service.url}{path}", method="POST",
                                              raise_error=False, body=orjson.dumps(body),
                                              request_timeout=60, headers=headers)
                return path, response.code, orjson.loads(response.body)

            answers = await asyncio.wait_for(asyncio.gather(*(send(i) for i in range(1000))), 90)
            codes = {code for _, code, _ in answers}
            assert codes <= {201, 202, 503}, sorted(codes)
            accepted = {i for path, code, body in answers if code == 202 for i in body["ids"]}
            accepted |= {i for path, code, body in answers if code == 503 and "error" in body
                         for i in body["error"].get("accepted_ids", [])}
            assert len(accepted) > 0
            await drained(service, len(accepted), own)
        finally:
            client.close()
    created = run_sql(own, "SELECT count(*) FROM competitions")[0][0]
    assert created - 1 == sum(1 for path, code, _ in answers
                              if path == "/v1/competitions" and code == 201) > 0
    assert_exact(own, accepted)


async def test_idle_connections_cut_by_the_server_are_replaced_before_use(
        own: Stores) -> None:
    settings = make_settings(pg_pool_min=1, pg_pool_max=1)  # one connection to cut
    async with serving(settings, own.database_url, own.redis_url) as (service, api):
        await seed(api)
        db = service.deps.db
        db.preping_idle_s = 0  # ping every reused connection
        # Cut while this process looks away (its loop blocked, on purpose): the socket's
        # close goes unseen, as after a proxy's idle timeout; only the ping can tell.
        backends = ("SELECT {} FROM pg_stat_activity "
                    "WHERE application_name = 'points-server' AND pid <> pg_backend_pid()")
        run_sql(own, backends.format("pg_terminate_backend(pid)"))
        until_sync(lambda: run_sql(own, backends.format("count(*)")) == [(0,)],
                   "every connection of the service gone", timeout_s=10)
        async with db.cursor() as cur:  # the cut connection is found and replaced
            await cur.execute("SELECT 1")
        assert db.pings_failed == 1
        for _ in range(3):
            status, body = await api.get("/v1/competitions", token="admin")
            assert status == 200 and len(body["items"]) == 1


async def test_both_stores_down_answers_503_with_retry_after_and_accepts_nothing(
        faulty: tuple[Service, Api], own: Stores) -> None:
    service, api = faulty
    cid, parts = await seed(api)  # the token is now verified (and cached) by this process
    own.redis.kill()
    await asyncio.to_thread(own.postgres.stop, even_if_reused=True)
    response = await api.response("POST", "/v1/points",
                                  json=batch(cid, parts, "lost", 5))
    body = orjson.loads(response.body)
    assert response.code == 503, body
    assert int(response.headers["Retry-After"]) >= 1
    assert body["error"]["code"] == "unavailable" and "nothing was accepted" in \
        body["error"]["message"]
    status, ready = await api.get("/ready", token=None)
    assert (status, ready["status"]) == (503, "unavailable")
    await asyncio.to_thread(own.postgres.start)
    await asyncio.to_thread(own.redis.start)
    workers = service.deps.workers
    # The workers found Redis gone (their breaker opened) and find it back: an
    # empty queue says nothing of that, the breakers do.
    assert workers.redis_breaker.opened_total > 0
    await until(lambda: (workers.redis_breaker.state, workers.postgres_breaker.state)
                == ("closed", "closed"), "the workers' circuit breakers closed again")
    await drained(service, 0, own)
    assert_exact(own, set())


async def test_health_turns_draining_while_shutdown_waits_for_in_flight_requests(
        own: Stores) -> None:
    settings = make_settings(queue_workers=0, ack_timeout_s=1.5)
    context = running_service(settings, own.database_url, own.redis_url)
    service = await context.__aenter__()
    serving_state = service.deps.serving
    api = Api(service.url)
    stopping: asyncio.Future | None = None
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
        await until(lambda: serving_state.inflight == 1, "the slow request in flight")
        stopping = asyncio.ensure_future(context.__aexit__(None, None, None))
        await until(lambda: serving_state.draining, "the stop under way")
        assert await health() == b"HTTP/1.1 503 Service Unavailable"
        assert not stopping.done()  # still waiting for the in-flight request
        status, body = await slow
        assert (status, body["committed"]) == (202, False)  # answered, not cut off
        await asyncio.wait_for(stopping, 10)
        writer.close()
    finally:
        api.http.close()
        if stopping is None:
            await context.__aexit__(None, None, None)
        elif not stopping.done():
            await asyncio.wait_for(stopping, 10)


async def test_a_naive_request_cut_by_a_redis_kill_is_accepted_whole_and_once(
        own: Stores) -> None:
    settings = make_settings(ingest_path="naive", queue_workers=0)
    async with serving(settings, own.database_url, own.redis_url) as (service, api):
        cid, parts = await seed(api)
        request = asyncio.ensure_future(api.post("/v1/points", batch(cid, parts, "cut", 1000)))
        # One Redis call per point: kill Redis once the enqueue is under way.
        await enqueued(service, 100)
        own.redis.kill()
        status, body = await request
        assert status == 202 and "committed" not in body, body  # part queued, part direct
        assert 0 < service.deps.ingest.written_directly < 1000
        await asyncio.to_thread(own.redis.start)
        # Workers (not burst mode): each pooled connection to the killed Redis fails
        # once, and the worker loop backs off and reconnects, as in production.
        service.deps.workers.start(1)
        await drained(service, 1000, own)
        assert_exact(own, set(body["ids"]))


async def test_a_bulk_upload_cut_by_a_redis_kill_commits_every_line_once(
        own: Stores) -> None:
    settings = make_settings(queue_workers=0, bulk_chunk_points=100)
    async with serving(settings, own.database_url, own.redis_url) as (service, api):
        cid, parts = await seed(api)

        async def produce(write) -> None:
            await write(b"id,competition_id,participant_id,value\n")
            for block in range(10):
                await write("".join(f"u{i},{cid},{parts[i % 3]},{i}\n"
                                    for i in range(block * 100, block * 100 + 100)).encode())
                if block == 4:  # half-way, once the server has queued some of it
                    await enqueued(service, 300)
                    own.redis.kill()

        status, body = await api.request("POST", "/v1/points/bulk", body_producer=produce,
                                         content_type="text/csv",
                                         headers={"Transfer-Encoding": "chunked"})
        assert (status, body["accepted"]) == (202, 1000), body
        assert 0 < service.deps.ingest.written_directly < 1000  # both routes were taken
        await asyncio.to_thread(own.redis.start)
        service.deps.workers.start(1)
        await drained(service, 1000, own)
        assert_exact(own, {f"u{i}" for i in range(1000)})


async def test_connections_silently_dropped_mid_flow_are_given_up_and_replaced(
        own: Stores) -> None:
    """No FIN, no RST: a lost NAT entry.  Timeouts find it; nothing is lost or doubled."""
    assert own.redis is not None and own.postgres is not None
    pg = await BlackHoleProxy("127.0.0.1", own.postgres.port).start()  # type: ignore[arg-type]
    rd = await BlackHoleProxy("127.0.0.1", own.redis.port).start()  # type: ignore[arg-type]
    settings = make_settings(queue_workers=2, pg_statement_timeout_ms=1000,
                             redis_timeout_s=1.0, pg_connect_timeout_s=2.0)
    context = running_service(
        settings, pg.url(f"postgresql://postgres:{own.postgres.password}@127.0.0.1:{{port}}"
                         "/postgres"),
        rd.url(f"redis://:{own.redis.password}@127.0.0.1:{{port}}/0"))
    service = await context.__aenter__()
    api = Api(service.url)
    accepted: set[str] = set()
    try:
        cid, parts = await seed(api)
        for round_ in range(3):
            status, body = await api.post("/v1/points", batch(cid, parts, f"before{round_}"))
            assert status == 202
            accepted |= set(body["ids"])
        await drained(service, len(accepted), own)
        pg.blackhole()
        rd.blackhole()
        assert pg.blackholed and rd.blackholed
        refused = 0
        deadline = asyncio.get_running_loop().time() + 30
        for round_ in range(5):
            body = batch(cid, parts, f"after{round_}")
            while True:  # a client retrying with the same ids: never a double
                status, answer = await api.post("/v1/points", body)
                if status in (201, 202):
                    break
                assert status == 503, answer
                refused += 1
                assert asyncio.get_running_loop().time() < deadline
            accepted |= set(answer["ids"])
        assert refused >= 1  # a request did meet a silenced connection, and gave up on it
        await drained(service, len(accepted), own, timeout_s=30)
        assert_exact(own, accepted)
    finally:
        api.http.close()
        await context.__aexit__(None, None, None)
        await pg.close()
        await rd.close()


async def test_an_upload_refused_when_redis_and_postgres_fail_says_where_it_stopped(
        own: Stores) -> None:
    settings = make_settings(queue_workers=0, bulk_chunk_points=100)
    async with serving(settings, own.database_url, own.redis_url) as (service, api):
        key = {"Idempotency-Key": "night-batch-7"}
        cid, parts = await seed(api)
        await asyncio.to_thread(own.postgres.stop, even_if_reused=True)  # no fallback
        lines = [f"{cid},{parts[i % 3]},{i}\n" for i in range(1000)]

        async def produce(write) -> None:
            await write(b"competition_id,participant_id,value\n")
            for block in range(10):
                await write("".join(lines[block * 100:block * 100 + 100]).encode())
                if block == 4:
                    await enqueued(service, 300)
                    own.redis.kill()

        status, body = await api.request("POST", "/v1/points/bulk", body_producer=produce,
                                         content_type="text/csv", headers={
                                             "Transfer-Encoding": "chunked", **key})
        assert status == 503, body
        error = body["error"]
        await asyncio.to_thread(own.redis.start)
        await asyncio.to_thread(own.postgres.start)
        in_redis = int((await service.deps.queue.stats())["totals"]["enqueued"])
        # The reply's resume point is what Redis surely holds (line 1 is the header);
        # a call cut mid-flight is reported as unknown, and may or may not be in.
        assert error["accepted_through_line"] == error["accepted"] + 1 >= 301
        unknown = error.get("unknown_through_line", error["accepted_through_line"]) \
            - error["accepted_through_line"]
        assert error["accepted"] <= in_redis <= error["accepted"] + unknown
        # Re-sent whole with its key, whatever was unknown: every line once.
        data = b"competition_id,participant_id,value\n" + "".join(lines).encode()
        for _ in range(5):  # the first calls may meet connections to the old Redis, or
            # the key still held by the cut upload until its outcome reaches Redis (409)
            response = await api.response("POST", "/v1/points/bulk", body=data,
                                          content_type="text/csv", headers=key)
            status, body = response.code, orjson.loads(response.body)
            if status == 202:
                break
            if status == 409:  # as a client does: ask again after Retry-After
                await asyncio.sleep(int(response.headers["Retry-After"]))
        else:
            raise AssertionError(f"the resent upload was not taken in 5 tries: {body}")
        assert (status, body["accepted"]) == (202, 1000), body
        service.deps.workers.start(1)
        await drained(service, 1000, own)
        ids = KeyedIds(key["Idempotency-Key"], hash_token(TOKENS["admin"]), "l")
        assert_exact(own, {ids(line) for line in range(2, 1002)})


# A bug staged in PostgreSQL: every insert into ``points`` raises an error the code
# does not know (SQLSTATE P0001 is no outage and no data error: it passes untranslated).
STAGED_BUG = """
CREATE FUNCTION staged_bug() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN RAISE EXCEPTION 'a staged bug'; END $$;
CREATE TRIGGER staged_bug BEFORE INSERT ON points FOR EACH ROW EXECUTE FUNCTION staged_bug();
"""


def queued_ids(stores: Stores) -> set[str]:
    """Every point id in the queue's chunk payloads, read from Redis itself."""
    assert stores.redis_url is not None
    client = redis.Redis.from_url(stores.redis_url)
    try:
        return {point[0] for chunk_id, payload in client.hgetall(keys.ITEMS).items()
                for point in Chunk.from_payload(chunk_id.decode(), payload).points}
    finally:
        client.close()


@pytest.mark.parametrize("route", ["points", "bulk"])
async def test_a_bug_after_an_enqueue_whose_reply_was_lost_reports_every_id_unknown(
        own: Stores, route: str) -> None:
    """The ENQUEUE runs in Redis but its reply never comes; the fallback to PostgreSQL
    then meets a bug.  The points are in Redis: the 500 must say so (unknown), never
    "nothing was accepted"."""
    assert own.redis is not None
    proxy = await BlackHoleProxy("127.0.0.1", own.redis.port).start()  # type: ignore[arg-type]
    settings = make_settings(redis_timeout_s=1.0)
    try:
        url = proxy.url(f"redis://:{own.redis.password}@127.0.0.1:{{port}}/0")
        async with serving(settings, own.database_url, url) as (_, api):
            cid, parts = await seed(api)
            # The pooled Redis connection, just used (no health-check ping before reuse).
            status, _ = await api.post("/v1/points", batch(cid, parts, "warm", 1))
            assert status == 202
            run_sql(own, STAGED_BUG)
            proxy.blackhole(replies_only=True)
            lines = batch(cid, parts, "lost", 5)["points"]
            if route == "points":
                status, body = await api.post("/v1/points", {"points": lines})
            else:
                status, body = await api.post(
                    "/v1/points/bulk", content_type="application/x-ndjson",
                    body=b"\n".join(orjson.dumps(line) for line in lines))
            assert status == 500, body
            error = body["error"]
            assert error["code"] == "internal_error"
            if route == "points":
                assert error["ids"] == [line["id"] for line in lines]
                assert (error["accepted_ids"], error["unknown_ids"]) == ([], error["ids"])
            else:
                assert (error["accepted"], error["accepted_through_line"],
                        error["unknown_through_line"]) == (0, 0, 5)
            # They are in Redis indeed: the call ran, only its reply was lost.
            assert {line["id"] for line in lines} <= queued_ids(own)
    finally:
        await proxy.close()


async def test_an_enqueue_script_that_fails_after_writing_reports_its_ids_unknown(
        own: Stores) -> None:
    """A script stops where it fails and keeps what it wrote: an ENQUEUE that Redis
    answers with an error may have queued its points.  With PostgreSQL down there is
    no fallback, and the 503 must not say "nothing was accepted"."""
    async with serving(make_settings(), own.database_url, own.redis_url) as (service, api):
        cid, parts = await seed(api)  # the token is now verified (and cached)
        await asyncio.to_thread(own.postgres.stop, even_if_reused=True)
        # A counter ENQUEUE raises last, after writing the chunks, no longer a number.
        await service.deps.redis.hset(keys.STATS, "enqueued", "not-a-number")
        sent = batch(cid, parts, "s", 20)
        status, body = await api.post("/v1/points", sent)
        assert status == 503, body
        error = body["error"]
        ids = [point["id"] for point in sent["points"]]
        assert (error["accepted_ids"], error["unknown_ids"]) == ([], ids), error
        assert set(ids) <= queued_ids(own)  # queued indeed: workers will commit them
        # The client resends the unknown ones with their ids once the stores are back:
        # every point is committed once.
        await service.deps.redis.hset(keys.STATS, "enqueued", 0)
        await asyncio.to_thread(own.postgres.start)
        status, body = await api.post("/v1/points", sent)
        assert status == 202, body
        service.deps.workers.start(1)
        await drained(service, len(ids), own)
        assert_exact(own, set(ids))


async def test_a_keyed_upload_whose_redis_fails_mid_stream_stops_where_its_record_ends(
        own: Stores) -> None:
    """Once an upload's Idempotency-Key is recorded, its progress must be too: a
    checkpoint Redis cannot take stops the upload there (503), never a direct write
    of lines the record does not cover (a later body under the key could take
    their ids)."""
    async with serving(make_settings(bulk_chunk_points=10), own.database_url,
                       own.redis_url) as (service, api):
        cid, parts = await seed(api)
        lines = [orjson.dumps({"id": f"u{i}", "competition_id": cid,
                               "participant_id": parts[i % 3], "value": 1})
                 for i in range(40)]

        async def produce(write) -> None:  # type: ignore[no-untyped-def]
            await write(b"\n".join(lines[:10]) + b"\n")  # one chunk: checkpointed, queued

            async def queued() -> bool:
                return (await service.deps.queue.stats())["totals"]["enqueued"] >= 10

            await until(queued, "the first chunk enqueued")
            own.redis.kill()  # type: ignore[union-attr]
            await write(b"\n".join(lines[10:]) + b"\n")

        status, body = await api.post("/v1/points/bulk", content_type="application/x-ndjson",
                                      headers={"Idempotency-Key": "day-7"},
                                      body_producer=produce)
        assert status == 503, body
        assert (body["error"]["accepted"], body["error"]["accepted_through_line"]) == (10, 10)
        assert run_sql(own, "SELECT count(*) FROM points") == [(0,)]  # nothing written past
