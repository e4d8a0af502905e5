"""Each queue script on a real Redis: enqueue, claim, settle, release, reclaim, dead letters."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import orjson
import pytest
import redis.asyncio as aioredis
import tornado.ioloop

from server.points import now_us
from server.queue import keys
from server.queue.chunks import Chunk, DeadLetter, Settlement, chunk_size
from server.queue.paths import make_path
from server.queue.redis_queue import PointQueue
from tests.conftest import Stores


def points(n: int, tag: str = "p") -> list[tuple]:
    now = now_us()
    return [(f"{tag}{i}", 1, 1, float(i), now, now) for i in range(n)]


@pytest.fixture
def client(clean: Stores, io_loop: tornado.ioloop.IOLoop) -> Iterator[aioredis.Redis]:
    assert clean.redis_url is not None
    redis = aioredis.Redis.from_url(clean.redis_url)
    yield redis
    io_loop.run_sync(redis.aclose)


def make_queue(client: aioredis.Redis, path: str = "pipelined", batch: int = 10,
               **kwargs: object) -> PointQueue:
    return PointQueue(client, make_path(path, batch), **kwargs)  # type: ignore[arg-type]


async def counters(client: aioredis.Redis) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in (await client.hgetall(keys.STATS)).items()}


async def test_enqueue_chunks_as_the_path_says_and_counts_points(
        client: aioredis.Redis, ingest_path: str) -> None:
    queue = make_queue(client, ingest_path, batch=10)
    await queue.enqueue(points(25))
    ready = [i.decode() for i in await client.lrange(keys.READY, 0, -1)]
    expected = [1] * 25 if ingest_path == "naive" else [10, 10, 5]
    assert [chunk_size(c) for c in ready] == expected
    assert await client.hlen(keys.ITEMS) == len(expected)
    assert (await counters(client))["ready"] == 25
    assert (await counters(client))["enqueued"] == 25


async def test_claim_leases_up_to_max_points_and_moves_the_counters(
        client: aioredis.Redis) -> None:
    queue = make_queue(client, batch=10)
    await queue.enqueue(points(25))
    chunks = await queue.claim(20, lease_s=30)
    assert [len(c.points) for c in chunks] == [10, 10]
    assert [p[0] for p in chunks[0].points] == [f"p{i}" for i in range(10)]  # FIFO
    leases = await client.zrange(keys.LEASES, 0, -1, withscores=True)
    assert {lease.decode() for lease, _ in leases} == {c.id for c in chunks}
    assert {k: v for k, v in (await counters(client)).items() if k in ("ready", "inflight")} \
        == {"ready": 5, "inflight": 20}
    # At least one chunk even when it is larger than asked for.
    (last,) = await queue.claim(1, lease_s=30)
    assert len(last.points) == 5


async def test_claim_takes_nothing_while_paused(client: aioredis.Redis) -> None:
    queue = make_queue(client)
    await queue.enqueue(points(3))
    await queue.pause()
    assert await queue.claim(10, lease_s=30) == []
    await queue.resume()
    assert len(await queue.claim(10, lease_s=30)) == 1


async def test_settle_acknowledges_schedules_retries_and_dead_letters_in_one_step(
        client: aioredis.Redis) -> None:
    queue = make_queue(client, batch=10)
    await queue.enqueue(points(10))
    (chunk,) = await queue.claim(10, lease_s=30)
    retry = Chunk("0000000000000000000000000000000a-2", list(chunk.points[:2]), attempts=1)
    dead = DeadLetter(chunk.points[2], "unknown_participant", 3, 1, 2, "no such participant")
    await queue.settle(Settlement(acked=[chunk.id], committed=7, retries=[(retry, 123)],
                                  dead=[dead]))
    assert await client.zcard(keys.LEASES) == 0
    assert await client.hexists(keys.ITEMS, chunk.id) == 0  # acknowledged: no trace
    assert await client.zscore(keys.RETRY, retry.id) == 123
    assert Chunk.from_payload(retry.id, await client.hget(keys.ITEMS, retry.id)) == retry
    entry = orjson.loads(await client.hget(keys.DEAD, "p2"))
    assert (entry["reason"], entry["attempts"], entry["raw"][0]) == (
        "unknown_participant", 3, "p2")
    c = await counters(client)
    assert (c["inflight"], c["retry"], c["dead"], c["committed"]) == (0, 2, 1, 7)


async def test_dead_letter_queue_is_trimmed_by_count_and_by_age(
        client: aioredis.Redis) -> None:
    queue = make_queue(client, dead_max=3, dead_max_age_s=3600)
    old = DeadLetter(points(1, "old")[0], "data_error", 1, 1, 1, "x")
    await client.zadd(keys.DEAD_INDEX, {"old0": 1})  # failed in 1970: past the age bound
    await client.hset(keys.DEAD, "old0", old.entry())
    await client.hincrby(keys.STATS, "dead", 1)
    letters = [DeadLetter(p, "data_error", 1, 1, 1, "x") for p in points(5)]
    for letter in letters:
        await queue.settle(Settlement(dead=[letter]))
        await asyncio.sleep(0.002)  # distinct failure times, so "oldest" is defined
    remaining = {k.decode() for k in await client.hkeys(keys.DEAD)}
    assert remaining == {"p2", "p3", "p4"}
    assert (await counters(client))["dead"] == 3


async def test_release_hands_chunks_back_to_the_front_unspent(client: aioredis.Redis) -> None:
    queue = make_queue(client, batch=2)
    await queue.enqueue(points(6))
    first = await queue.claim(2, lease_s=30)
    assert await queue.release([c.id for c in first]) == 1
    assert await queue.release([c.id for c in first]) == 0  # only a held lease moves
    again = await queue.claim(2, lease_s=30)
    assert again == first and again[0].attempts == 0
    c = await counters(client)
    assert (c["ready"], c["inflight"]) == (4, 2)


async def test_reclaim_returns_expired_leases_first_and_due_retries_last(
        client: aioredis.Redis) -> None:
    queue = make_queue(client, batch=1)
    await queue.enqueue(points(3))
    (expiring,) = await queue.claim(1, lease_s=0.05)
    (kept,) = await queue.claim(1, lease_s=30)
    await queue.settle(Settlement(acked=[kept.id], retries=[
        (Chunk("0000000000000000000000000000000b-1", [kept.points[0]], 1), 1)]))
    await asyncio.sleep(0.1)
    assert await queue.reclaim() == (1, 1)
    order = [i.decode() for i in await client.lrange(keys.READY, 0, -1)]
    assert order[0] == expiring.id and order[-1] == "0000000000000000000000000000000b-1"
    c = await counters(client)
    assert (c["ready"], c["inflight"], c["retry"], c["reclaimed"]) == (3, 0, 0, 1)


async def test_dead_letters_can_be_requeued_once_and_purged(client: aioredis.Redis) -> None:
    queue = make_queue(client)
    letters = [DeadLetter(p, "unknown_participant", 8, 1, 2, "x") for p in points(3)]
    await queue.settle(Settlement(dead=letters))
    assert await queue.requeue_dead(["p0", "nope"]) == 1
    assert await queue.requeue_dead(["p0"]) == 0  # already moved: never twice
    (chunk,) = await queue.claim(10, lease_s=30)
    assert (chunk.points, chunk.attempts) == ([letters[0].point], 0)
    assert await queue.purge_dead(None) == 2
    c = await counters(client)
    assert (c["dead"], await client.hlen(keys.DEAD), await client.zcard(keys.DEAD_INDEX)) \
        == (0, 0, 0)
