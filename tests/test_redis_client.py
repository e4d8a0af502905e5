"""The service's Redis clients under ``REDIS_URL=redis+sentinel://``: every client talks
to the master the sentinels name and follows it across a failover.

Real processes (``tests/support/sentinel.py``): a primary, its replica and three
sentinels; the primary is killed with -9 mid-ingest.
"""

from __future__ import annotations

import asyncio
import signal

import pytest

from server.queue.durability import read_durability
from server.redis_client import redis_client
from server.runtime.prepare import Stores, check_durability
from tests.support import (
    assert_exact,
    make_settings,
    seed,
    serving,
    sql,
    until,
)
from tests.support.sentinel import SentinelGroup


@pytest.mark.parametrize("wait_replicas", [None, 0], ids=["wait-1-by-default", "no-wait"])
async def test_a_primary_killed_mid_ingest_fails_over_and_every_2xx_is_committed_once(
        clean: Stores, sentinels: SentinelGroup, wait_replicas: int | None) -> None:
    """With WAIT (the default behind Sentinel) the new master has no replica until the
    old one is back: meanwhile every 202 is written to PostgreSQL directly."""
    settings = make_settings(redis_url=sentinels.url, queue_workers=2, queue_lease_s=3.0,
                             redis_timeout_s=1.0, request_store_wait_s=0.5,
                             queue_wait_replicas=wait_replicas,
                             rate_limit_per_token=100_000.0)  # the limiter's calls go too
    assert settings.enqueue_wait_replicas == (1 if wait_replicas is None else 0)
    # Start-up's durability check reads the master's settings, and is satisfied (PROD).
    await asyncio.to_thread(check_durability, sentinels.url, settings.replace(prod=True))
    async with serving(settings, clean.database_url, sentinels.url) as (service, api):
        assert (await service.deps.redis.info("replication"))["role"] == "master"
        cid, parts = await seed(api)
        accepted: set[str] = set()
        unknown: set[str] = set()
        outcomes: list[tuple[bool, int, str]] = []  # (after the kill, status, where)
        killed = asyncio.Event()
        go = asyncio.Event()
        go.set()
        in_flight = [0]

        async def sender(lane: int) -> None:
            for round_ in range(10_000):
                await go.wait()
                ids = [f"l{lane}-r{round_}-{i}" for i in range(20)]
                in_flight[0] += 1
                try:
                    status, body = await api.post("/v1/points", {"points": [
                        {"id": point_id, "competition_id": cid,
                         "participant_id": parts[i % 3], "value": 1}
                        for i, point_id in enumerate(ids)]})
                finally:
                    in_flight[0] -= 1
                if status in (201, 202):
                    accepted.update(body["ids"])
                    where = "committed" if body.get("committed") else "queued"
                else:  # 503 while no master answers: nothing, or only some, taken
                    assert status == 503, body
                    accepted.update(body["error"].get("accepted_ids", []))
                    unknown.update(body["error"].get("unknown_ids", []))
                    where = body["error"]["code"]
                outcomes.append((killed.is_set(), status, where))
                if done.is_set():
                    return

        done = asyncio.Event()
        lanes = [asyncio.create_task(sender(lane)) for lane in range(3)]
        await until(lambda: len(accepted) >= 300, "ingest under way")
        if not settings.enqueue_wait_replicas:
            # Without WAIT, a 202 the master had not yet replicated is lost with it, by
            # Redis's own design (README): kill it between requests, once the replica
            # has every write, so that what this run checks is the failover itself.
            go.clear()
            await until(lambda: in_flight[0] == 0, "the senders between requests")
            assert await service.deps.redis.execute_command("WAIT", 1, 5000) == 1
        await asyncio.to_thread(sentinels.primary.stop, signal.SIGKILL)
        killed.set()
        go.set()
        # The sentinels promote the replica; ingest goes through it again.
        await until(lambda: sentinels.master_port() == sentinels.replica.port,
                    "the replica promoted", 15)
        if settings.enqueue_wait_replicas:
            # Redis answers again (its breaker closed), but no replica confirms a write:
            # each request's points are written to PostgreSQL directly.
            breaker = service.deps.workers.redis_breaker
            await until(lambda: breaker.state == "closed", "Redis's breaker closed", 10)
            mark = len(outcomes)
            await until(lambda: len(outcomes) - mark >= 10, "requests on the new master")
            assert not any(where == "queued" for _, _, where in outcomes[mark:]), outcomes
            # The old primary comes back; the sentinels make it the new one's replica.
            await asyncio.to_thread(sentinels.primary.start)
            await until(lambda: sentinels.replicas_of_master() == 1,
                        "the old primary replicating the new one", 15)
        mark = len(outcomes)
        await until(lambda: sum(1 for after, status, where in outcomes[mark:]
                                if status == 202 and where == "queued") >= 10,
                    "requests queued again, on the new master", 15)
        done.set()
        await asyncio.gather(*lanes)

        assert any(after and (status, where) == (202, "queued")
                   for after, status, where in outcomes)
        # The workers drain what the new master holds (what the old one had
        # replicated included), and each accepted point is committed exactly once.
        async def empty() -> bool:
            stats = await service.deps.queue.stats()
            return (stats["depth"], stats["inflight"]) == (0, 0) and sql(
                clean, "SELECT count(*) FROM standing_deltas") == [(0,)]

        await until(empty, "the queue drained from the new master", 20)
        # A 503's unknown ids may or may not be committed; the others, exactly.
        committed_unknown = {row[0] for row in sql(clean, "SELECT id FROM points")} & unknown
        assert_exact(clean, accepted | committed_unknown)
        assert (await service.deps.redis.info("replication"))["role"] == "master"
        assert service.deps.redis.connection_pool.master_address == (
            "127.0.0.1", sentinels.replica.port)


async def test_the_durability_check_reads_the_master_not_the_replica(
        sentinels: SentinelGroup) -> None:
    # The replica is set apart from the master: were it asked, it would show.
    sentinels.replica.ask("CONFIG", "SET", "appendfsync", "everysec")
    client = redis_client(sentinels.url, make_settings())
    try:
        durability = await read_durability(client)
    finally:
        await client.aclose()
    assert (durability.appendonly, durability.appendfsync) == ("yes", "always")
