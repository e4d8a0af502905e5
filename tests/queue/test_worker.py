"""Workers: same rows on both paths, exactly-once effect across crashes, retries, poison."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from server.errors import PoolTimeout, StoreUnavailable, WriteConflict
from server.points import now_us
from server.queue import keys
from server.queue.breaker import CLOSED, HALF_OPEN, OPEN
from server.queue.chunks import Chunk, chunk_size
from server.queue.redis_queue import Claim
from server.queue.worker import Workers
from server.runtime.lifecycle import Service
from server.runtime.prepare import Stores
from tests.support import (
    BOTH_PATHS,
    Api,
    assert_exact,
    batch,
    lock_waiters,
    locked,
    make_settings,
    plant_chunk,
    seed,
    sql,
    until,
)


@pytest.fixture
def settings(request: pytest.FixtureRequest, ingest_path: str):
    return make_settings(**{"ingest_path": ingest_path, "queue_batch_size": 64,
                            "queue_lease_s": 1.0, "queue_max_attempts": 3,
                            "retry_base_s": 0.001, "retry_max_s": 0.005,
                            **getattr(request, "param", {})})


def seeded_points(cid: int, parts: list[int], n: int, seed_value: int = 7) -> list[dict]:
    """A reproducible mix: client ids with repeats (duplicates) and server-assigned ids."""
    rng = random.Random(seed_value)
    points = []
    for i in range(n):
        point = {"competition_id": cid, "participant_id": rng.choice(parts),
                 "value": round(rng.uniform(-5, 20), 3)}
        if i % 3:
            point["id"] = f"ev-{rng.randrange(n // 2)}"  # about a third are repeats
        points.append(point)
    return points


async def redis_ms(redis: Redis) -> int:
    """Now on the Redis clock, the one lease deadlines are set by (ms)."""
    seconds, micros = await redis.time()
    return seconds * 1000 + micros // 1000


async def leases(redis: Redis) -> dict[str, tuple[str, float | None]]:
    """Chunk id -> (its holder's claim token, its lease deadline in ms), for every chunk
    held now (holders read first: a claim landing in between is left out, not half in)."""
    holders = await redis.hgetall(keys.HOLDERS)
    deadlines = dict(await redis.zrange(keys.LEASES, 0, -1, withscores=True))
    return {chunk_id.decode(): (token.decode(), deadlines.get(chunk_id))
            for chunk_id, token in holders.items()}


async def assert_kept_past_their_lease(redis: Redis, workers: Workers) -> None:
    """Let the claims in hand outlive the lease they were taken with, then assert that
    their holders still hold them: the same claims, leases renewed into the future.

    Wall time passes on purpose: half a lease past the first deadline (and two reclaim
    rounds), which only a lease renewed more than once reaches (each renewal extends
    it by one lease from then; the first comes a third of a lease after the claim).
    """
    busy, before = dict(workers.busy), await leases(redis)
    assert busy and before, "no claim in hand to watch"
    first_deadline = max(deadline or 0 for _, deadline in before.values())
    lease_ms = workers.settings.queue_lease_s * 1000

    async def past_it() -> bool:
        return await redis_ms(redis) > first_deadline + lease_ms / 2

    await until(past_it, "the Redis clock past the claims' first lease deadline",
                interval_s=0.05)
    after, now = await leases(redis), await redis_ms(redis)
    assert {chunk_id: after.get(chunk_id, (None,))[0] for chunk_id in before} == {
        chunk_id: token for chunk_id, (token, _) in before.items()}  # never taken away
    assert all((after[chunk_id][1] or 0) > now for chunk_id in before), (before, after, now)
    assert busy.items() <= workers.busy.items()  # the same claims, still being written


@BOTH_PATHS
async def test_both_paths_produce_the_same_rows_and_standings(
        api: Api, service: Service, clean: Stores, ingest_path: str) -> None:
    cid, parts = await seed(api, participants=7)
    points = seeded_points(cid, parts, 300)
    for start in range(0, len(points), 100):
        status, _ = await api.post("/v1/points", {"points": points[start:start + 100]})
        assert status == 202
    await service.deps.workers.drain()

    # What the contract says must be there, whatever the path: first write of an id wins.
    first: dict[str, dict] = {}
    anonymous = []
    for p in points:
        if "id" in p:
            first.setdefault(p["id"], p)
        else:
            anonymous.append(p)
    expected_rows = sorted((p["id"], p["participant_id"], p["value"]) for p in first.values())
    rows = sql(clean, "SELECT id, participant_id, value FROM points WHERE id LIKE 'ev-%%' "
                      "ORDER BY id")
    assert rows == expected_rows
    assert sql(clean, "SELECT count(*) FROM points") == [(len(first) + len(anonymous),)]
    totals: dict[int, list[float]] = {}
    for p in [*first.values(), *anonymous]:
        totals.setdefault(p["participant_id"], []).append(p["value"])
    standings = sql(clean, "SELECT participant_id, total, points FROM standings "
                           "ORDER BY participant_id")
    assert [(pid, round(total, 6), n) for pid, total, n in standings] == sorted(
        (pid, round(sum(v), 6), len(v)) for pid, v in totals.items())

    stats = service.deps.workers.stats
    if ingest_path == "naive":
        assert stats.claims == len(points)  # one point per claim round trip
    else:
        assert stats.claims <= len(points) // 64 + 6  # batches of QUEUE_BATCH_SIZE


@BOTH_PATHS
async def test_claim_reclaims_expired_lease_after_worker_died_before_ack(
        api: Api, service: Service, clean: Stores) -> None:
    cid, parts = await seed(api)
    points = [{"id": f"k{i}", "competition_id": cid, "participant_id": parts[i % 3],
               "value": 2} for i in range(40)]
    await api.post("/v1/points", {"points": points})
    queue, workers = service.deps.queue, service.deps.workers

    # A worker claims everything, commits to PostgreSQL, then dies before acknowledging.
    claim = await queue.claim(1000, lease_s=1.0)
    await workers.writer.write([Chunk.from_payload(i, raw) for i, raw, _ in claim.raw])
    assert sql(clean, "SELECT count(*) FROM points") == [(40,)]
    stats = await queue.stats()
    assert (stats["depth"], stats["inflight"]) == (0, 40)

    deadline = max(score for _, score in await service.deps.redis.zrange(
        keys.LEASES, 0, -1, withscores=True))

    async def expired() -> bool:
        return await redis_ms(service.deps.redis) > deadline

    await until(expired, "the dead worker's lease to expire", interval_s=0.05)
    await workers.drain()  # reclaims (unless the reclaimer did) and redelivers
    stats = await queue.stats()
    assert (stats["depth"], stats["inflight"]) == (0, 0)
    assert stats["totals"]["reclaimed"] == 40
    # The redelivered copies insert nothing and settle cleanly (without the
    # idempotent insert they would be dead-lettered while the table looked right).
    assert (stats["dead"], stats["totals"]["dead_lettered"]) == (0, 0)
    assert_exact(clean, {f"k{i}" for i in range(40)})
    for key in (keys.ITEMS, keys.LEASES, keys.HOLDERS, keys.HANDBACKS):
        assert await service.deps.redis.exists(key) == 0  # acknowledged: no trace left


@BOTH_PATHS
async def test_cancelled_worker_hands_its_claim_back(api: Api, service: Service,
                                                     clean: Stores) -> None:
    cid, parts = await seed(api)
    _, body = await api.post("/v1/points", {"points": [
        {"competition_id": cid, "participant_id": parts[0], "value": 1}] * 20})
    workers = service.deps.workers
    # Hold the points table so that the worker's insert blocks: a cancel then lands
    # mid-write for certain (a cancel racing a finishing statement can be lost in
    # asyncio.wait_for on Python 3.11, and would prove nothing).
    with locked(clean, "points"):
        task = asyncio.create_task(workers.work_once(0))
        await until(lambda: workers.busy, "the worker busy with its claim")
        await until(lambda: lock_waiters(clean), "the worker's insert waiting for the lock")
        assert workers.busy and not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert workers.stats.handbacks == 1
    stats = await service.deps.queue.stats()
    assert (stats["depth"], stats["inflight"]) == (20, 0)  # handed back, not leased
    await workers.drain()  # no lease wait: the cancelled claim went straight back
    assert_exact(clean, set(body["ids"]))


@BOTH_PATHS
async def test_unknown_participant_is_retried_then_dead_lettered(
        api: Api, service: Service, clean: Stores) -> None:
    cid, parts = await seed(api)
    await api.post("/v1/points", {"points": [
        {"id": "good", "competition_id": cid, "participant_id": parts[0], "value": 1},
        {"id": "ghost", "competition_id": cid, "participant_id": 999, "value": 1},
        {"id": "lost", "competition_id": 777, "participant_id": parts[0], "value": 1}]})
    workers = service.deps.workers

    async def drained_into_the_dlq() -> bool:
        await workers.drain()  # each round reclaims the retries that came due
        return (await service.deps.queue.stats())["dead"] == 2

    await until(drained_into_the_dlq, "both unknown references dead-lettered")
    entries = {k.decode(): orjson.loads(v)
               for k, v in (await service.deps.redis.hgetall(keys.DEAD)).items()}
    assert {k: (e["reason"], e["attempts"]) for k, e in entries.items()} == {
        f"{cid}:ghost": ("unknown_participant", 3), "777:lost": ("unknown_competition", 3)}
    assert sql(clean, "SELECT id FROM points") == [("good",)]
    stats = await service.deps.queue.stats()
    assert (stats["depth"], stats["inflight"], stats["retry_scheduled"]) == (0, 0, 0)


@BOTH_PATHS
async def test_poison_point_is_isolated_while_batch_mates_commit(
        api: Api, service: Service, clean: Stores) -> None:
    cid, (a, b, _) = await seed(api)
    received = now_us()
    # Records that never passed the API (an older producer, a bug) are in the queue:
    # PostgreSQL refuses the whole batch because of one of them (bigint overflow).
    points = [(f"p{i}", cid, b, 1.0, received, received) for i in range(20)]
    points[5] = ("poison", cid, 2**63, 1.0, received, received)
    points[15] = ("huge", cid, a, 1e308, received, received)
    await service.deps.queue.enqueue(points)
    await service.deps.workers.drain()
    committed = {row[0] for row in sql(clean, "SELECT id FROM points")}
    assert committed == {f"p{i}" for i in range(20)} - {"p5", "p15"}
    assert_exact(clean, committed)
    dead = {k.decode(): orjson.loads(v)["reason"]
            for k, v in (await service.deps.redis.hgetall(keys.DEAD)).items()}
    assert dead == {f"{cid}:poison": "data_error", f"{cid}:huge": "invalid_value"}


# A day's backoff: no retry comes due during the test (full jitter draws from [0, 1 day]).
@BOTH_PATHS
@pytest.mark.parametrize("settings", [{"queue_lease_s": 1.0, "retry_base_s": 86400.0,
                                       "retry_max_s": 86400.0}], indirect=True)
async def test_a_slow_live_worker_keeps_its_lease_and_nothing_is_redelivered(
        api: Api, service: Service, clean: Stores) -> None:
    cid, parts = await seed(api)
    good = [{"id": f"slow{i}", "competition_id": cid, "participant_id": parts[i % 3],
             "value": 1} for i in range(6)]
    bad = [{"id": f"early{i}", "competition_id": cid, "participant_id": 999, "value": 1}
           for i in range(2)]  # registration lags: each is retried, once
    await api.post("/v1/points", {"points": good + bad})
    workers, queue = service.deps.workers, service.deps.queue
    with locked(clean, "points"):  # PostgreSQL is slow: longer than the lease
        workers.start(2)  # and the reclaimer, which takes back whatever lease expires
        await until(lambda: workers.busy, "a worker busy with a claim")
        await assert_kept_past_their_lease(service.deps.redis, workers)
        assert (await queue.stats())["totals"]["reclaimed"] == 0

    async def settled() -> dict | None:
        stats = await queue.stats()
        return stats if stats["depth"] == stats["inflight"] == 0 else None

    stats = await until(settled, "every claim settled")
    await workers.folder.fold_once()
    assert_exact(clean, {p["id"] for p in good})
    assert stats["totals"]["reclaimed"] == 0  # renewed while it worked: never taken away
    assert (stats["retry_scheduled"], stats["totals"]["retried"]) == (2, 2)  # not twice
    assert workers.stats.leases_lost == 0


@pytest.mark.parametrize("settings", [{"queue_max_handbacks": 5}], indirect=True)
async def test_a_chunk_that_keeps_failing_unexpectedly_is_dead_lettered_not_looped(
        api: Api, service: Service) -> None:
    await plant_chunk(service, b'{"a":0,"p":[["short",1]],"f":null,"e":null}')
    workers = service.deps.workers
    workers.supervisor.restart_base_s = 0.01
    workers.start(1)

    async def dead_lettered() -> int:
        return (await service.deps.queue.stats())["dead"]

    await until(dead_lettered, "the chunk dead-lettered after its handbacks")
    _, page = await api.get("/v1/admin/dlq")
    (entry,) = page["items"]  # kept whole: its point is not one to list or requeue
    assert (entry["chunk_id"], entry["reason"], entry["attempts"]) == (
        "00000000000000000000000000000000-1", "unexpected_error", 5)
    assert "IndexError" in entry["last_error"]
    assert workers.supervisor.restarts_total == 5  # each failure was seen, once
    stats = await service.deps.queue.stats()
    assert (stats["depth"], stats["inflight"]) == (0, 0)
    assert await service.deps.redis.exists(keys.HANDBACKS) == 0  # no trace left


@BOTH_PATHS
async def test_an_undecodable_chunk_is_set_aside_while_its_claim_mates_commit(
        api: Api, service: Service, clean: Stores) -> None:
    cid, parts = await seed(api)
    await plant_chunk(service, b"\xff not json", "00000000000000000000000000000000-1")
    _, body = await api.post("/v1/points", {"points": [
        {"competition_id": cid, "participant_id": parts[0], "value": 2}] * 10})
    await service.deps.workers.drain()
    assert_exact(clean, set(body["ids"]))
    _, page = await api.get("/v1/admin/dlq")
    (entry,) = page["items"]
    assert (entry["point"], entry["reason"], entry["attempts"]) == (None, "undecodable", 5)
    assert entry["chunk_id"] == "00000000000000000000000000000000-1"
    assert await api.post("/v1/admin/dlq/requeue", {"all": True}) == (
        200, {"requeued": 0, "refused_queue_full": 0, "not_requeueable": 1})
    status, purged = await api.request("DELETE", "/v1/admin/dlq", json={"all": True})
    assert (status, purged) == (200, {"purged": 1})


@pytest.mark.parametrize("settings", [{"pg_pool_max": 1, "pg_connect_timeout_s": 1.0}],
                         indirect=True)
async def test_workers_drain_on_their_own_connections_when_requests_hold_every_other(
        api: Api, service: Service, clean: Stores) -> None:
    cid, parts = await seed(api)
    _, body = await api.post("/v1/points", batch(cid, parts, "own", 50))
    async with service.deps.db.cursor():  # the request pool's only connection, held
        await asyncio.wait_for(service.deps.workers.drain(), 10)
    assert_exact(clean, set(body["ids"]))


def test_a_local_pool_wait_or_a_conflict_never_opens_a_store_breaker(
        service: Service) -> None:
    workers = service.deps.workers
    workers._store_failed(PoolTimeout("postgres", "every connection busy"))
    workers._store_failed(WriteConflict("postgres", "deadlock detected"))
    assert workers.postgres_breaker.state == CLOSED
    workers._store_failed(StoreUnavailable("postgres", "connection refused"))
    assert workers.postgres_breaker.state == OPEN


@BOTH_PATHS
@pytest.mark.parametrize("settings", [{"pg_statement_timeout_ms": 300}], indirect=True)
async def test_a_statement_timeout_costs_nothing_and_kills_no_worker(
        api: Api, service: Service, clean: Stores) -> None:
    cid, parts = await seed(api)
    _, body = await api.post("/v1/points", batch(cid, parts, "slow", 20))
    workers = service.deps.workers
    # Every statement on points (and standings) now outlives its timeout.
    with locked(clean, "points", "standings"):
        workers.start(1)
        # Two handbacks: the first one's release has landed in Redis by the second.
        await until(lambda: workers.stats.handbacks >= 2, "claims handed back on the timeout")
        assert await service.deps.redis.hlen(keys.HANDBACKS) == 0  # none counted against it
        status, answer = await api.get(f"/v1/competitions/{cid}/leaderboard", token="read")
        assert status == 503 and answer["error"]["code"] == "unavailable"  # not a 500

    async def committed() -> bool:
        return (await service.deps.queue.stats())["totals"]["committed"] == 20

    await until(committed, "the 20 points committed once PostgreSQL answers again")
    await workers.folder.fold_once()
    assert_exact(clean, set(body["ids"]))
    assert workers.stats.handbacks >= 1 and workers.supervisor.restarts_total == 0
    totals = (await service.deps.queue.stats())["totals"]
    assert (totals["retried"], totals["dead_lettered"]) == (0, 0)
    assert await service.deps.redis.exists(keys.HANDBACKS) == 0  # not counted against it


# Pipelined: the bad chunk and the good one must share a claim (naive claims one point).
@pytest.mark.parametrize("ingest_path", ["pipelined"])
@pytest.mark.parametrize("settings", [{"queue_lease_s": 1.0}], indirect=True)
async def test_the_lease_is_kept_for_the_rest_of_a_claim_after_a_chunk_is_set_aside(
        api: Api, service: Service, clean: Stores) -> None:
    cid, parts = await seed(api)
    await plant_chunk(service, b"\xff not json")
    _, body = await api.post("/v1/points", batch(cid, parts, "kept", 10))
    workers, redis = service.deps.workers, service.deps.redis
    with locked(clean, "points"):
        task = asyncio.ensure_future(workers.work_once(0))
        await until(lambda: workers.busy, "the worker busy with its claim")

        async def set_aside() -> bool:
            return await redis.hexists(keys.HANDBACKS, "00000000000000000000000000000000-1")

        await until(set_aside, "the undecodable chunk handed back, its claim mate kept")
        assert len(await leases(redis)) == 1
        # The rest of the claim is renewed as the whole claim was (the reclaimer runs).
        await assert_kept_past_their_lease(redis, workers)
        assert not task.done()
    assert await task
    stats = await service.deps.queue.stats()
    assert stats["totals"]["reclaimed"] == 0 and workers.stats.leases_lost == 0
    await workers.drain()
    assert_exact(clean, set(body["ids"]))


@BOTH_PATHS
@pytest.mark.parametrize("settings", [{"queue_batch_size": 10}], indirect=True)
async def test_claims_grow_under_a_backlog_and_shrink_back_after(
        api: Api, service: Service, clean: Stores, ingest_path: str) -> None:
    cid, parts = await seed(api)
    backlog = 300 if ingest_path == "pipelined" else 30  # naive: a few show it stays at 1
    _, body = await api.post("/v1/points", batch(cid, parts, "deep", backlog))
    workers = service.deps.workers
    sizes = []
    while claimed := await workers.work_once(0):
        sizes.append(claimed)
    if ingest_path == "naive":
        assert set(sizes) == {1}  # naive stays naive: one point per round trip
    else:
        assert sizes[:4] == [10, 20, 40, 80]  # ×2 while claims come back full, ≤ ×8
        assert max(sizes) == 80 and sum(sizes) == 300
    assert workers._claim_size[0] == service.deps.strategy.claim_points  # empty: back to 1×
    await workers.folder.fold_once()
    assert_exact(clean, set(body["ids"]))


async def test_workers_stop_at_once_while_their_stores_breakers_are_open(
        service: Service) -> None:
    workers, supervisor = service.deps.workers, service.deps.workers.supervisor
    # PostgreSQL's cool-down is over, Redis's lasts an hour: the first worker takes
    # PostgreSQL's probe and then waits for Redis, holding it; the other waits for it.
    workers.postgres_breaker.record_failure("test: PostgreSQL was away")
    workers.postgres_breaker._open_until = 0
    workers.redis_breaker.base_s = workers.redis_breaker.max_s = 3600.0
    workers.redis_breaker.record_failure("test: Redis is away")
    workers.start(2)
    await until(lambda: workers.postgres_breaker._probing, "a worker holding PostgreSQL's probe")
    assert workers.postgres_breaker.state == HALF_OPEN
    workers.stop_claiming()
    # Neither the hour nor the held probe may keep the stop waiting for its deadline.
    await asyncio.wait_for(supervisor.stop(30.0), 2.0)
    assert not workers.postgres_breaker._probing  # the probe was released on the way out


@BOTH_PATHS
@pytest.mark.parametrize("settings", [{"queue_max_handbacks": 3}], indirect=True)
async def test_a_chunk_whose_holders_keep_dying_is_dead_lettered_as_crashed_holder(
        api: Api, service: Service, clean: Stores) -> None:
    """Three holders in a row die with the chunks in hand (their leases expire, on
    Redis's clock): the next claim dead-letters them instead of writing them, and
    /metrics counts them by reason."""
    cid, parts = await seed(api)
    _, body = await api.post("/v1/points", {"points": [
        {"competition_id": cid, "participant_id": parts[0], "value": 1}] * 3})
    queue, redis = service.deps.queue, service.deps.redis
    for death in range(3):
        claim = await queue.claim(1000, lease_s=0.05)  # a holder that dies with it
        assert claim and all(claim.lost.get(i, 0) == death for i in claim.ids)
        deadline = max(score for _, score in await redis.zrange(keys.LEASES, 0, -1,
                                                                withscores=True))

        async def expired(deadline: float = deadline) -> bool:
            return await redis_ms(redis) > deadline

        await until(expired, "the dead holder's lease to expire", interval_s=0.01)
        await service.deps.workers.reclaim_due()
    service.deps.exporter.cache_s = 0.0  # every scrape renders anew
    before = dead_lettered_metric(await api.http.fetch(api.base_url + "/metrics"))
    assert await service.deps.workers.drain() == 0
    assert sql(clean, "SELECT count(*) FROM points") == [(0,)]
    _, page = await api.get("/v1/admin/dlq")
    assert sorted((item["point"]["id"], item["reason"], item["attempts"])
                  for item in page["items"]) == [(i, "crashed_holder", 3) for i in
                                                 sorted(body["ids"])]
    after = dead_lettered_metric(await api.http.fetch(api.base_url + "/metrics"))
    assert after - before == 3
    assert await redis.exists(keys.HANDBACKS) == 0  # settled: no trace left
    # Requeued by an operator, they start afresh and commit.
    assert (await api.post("/v1/admin/dlq/requeue", {"all": True}))[1]["requeued"] == 3
    assert await service.deps.workers.drain() == 3
    assert_exact(clean, set(body["ids"]))


def dead_lettered_metric(response: Any) -> float:
    """points_dead_lettered_total{reason="crashed_holder"} in a /metrics answer (0 if absent)."""
    for line in response.body.decode().splitlines():
        if line.startswith('points_dead_lettered_total{reason="crashed_holder"}'):
            return float(line.split()[-1])
    return 0.0


@BOTH_PATHS
async def test_a_worker_that_lost_its_lease_while_its_write_waited_writes_nothing(
        api: Api, service: Service, clean: Stores) -> None:
    """The write waits on a locked table; meanwhile the lease passes to another worker
    (planted: the holder Redis knows is another claim's token, as after a reclaim and a
    new claim).  Once the table is free the first worker's transaction rolls back: the
    rows are the new holder's to write, and it writes them once."""
    cid, parts = await seed(api)
    _, body = await api.post("/v1/points", {"points": [
        {"competition_id": cid, "participant_id": parts[i % 3], "value": 1}
        for i in range(3)]})
    workers, redis = service.deps.workers, service.deps.redis
    with locked(clean, "points"):
        stale = asyncio.ensure_future(workers.work_once(0))
        await until(lambda: lock_waiters(clean) >= 1, "the write waiting on the lock")
        held = {k.decode(): v.decode() for k, v in (await redis.hgetall(keys.HOLDERS)).items()}
        await redis.hset(keys.HOLDERS, mapping=dict.fromkeys(held, "thief"))
        await until(lambda: workers.leases[0].lost, "the stale worker to learn it lost")
    assert await asyncio.wait_for(stale, 10) == sum(map(chunk_size, held))  # claimed
    assert sql(clean, "SELECT count(*) FROM points") == [(0,)]  # nothing of it committed
    assert workers.stats.leases_lost == 1
    assert await redis.hgetall(keys.HOLDERS) == {k.encode(): b"thief" for k in held}
    # The new holder hands the chunks back (say); the next claim writes them, once.
    thief = Claim("thief", [(chunk_id, b"", "") for chunk_id in held])
    assert await service.deps.queue.release(thief) == len(held)
    assert await workers.drain() == 3
    assert_exact(clean, set(body["ids"]))
