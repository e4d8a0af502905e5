"""Each queue script on a real Redis: enqueue, claim, renew, settle, release, reclaim,
dead letters — with fencing (only a chunk's current holder settles it)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import orjson
import pytest
import redis.asyncio as aioredis
import tornado.ioloop

from server.errors import EnqueueInterrupted, QueueFull
from server.points import now_us
from server.queue import keys
from server.queue.chunks import Chunk, DeadLetter, Settlement, chunk_size
from server.queue.redis_queue import Claim, PointQueue, handbacks_of
from server.queue.strategy import make_strategy
from server.runtime.prepare import Stores
from tests.support import BOTH_PATHS
from tests.support.sentinel import SentinelGroup


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
    return PointQueue(client, make_strategy(path, batch), **kwargs)  # type: ignore[arg-type]


def decode(claim: Claim) -> list[Chunk]:
    return [Chunk.from_payload(chunk_id, payload) for chunk_id, payload, _ in claim.raw]


async def counters(client: aioredis.Redis) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in (await client.hgetall(keys.STATS)).items()}


@BOTH_PATHS
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


async def test_claim_leases_up_to_max_points_under_one_token(client: aioredis.Redis) -> None:
    queue = make_queue(client, batch=10)
    await queue.enqueue(points(25))
    claim = await queue.claim(20, lease_s=30)
    chunks = decode(claim)
    assert [len(c.points) for c in chunks] == [10, 10]
    assert [p[0] for p in chunks[0].points] == [f"p{i}" for i in range(10)]  # FIFO
    leases = await client.zrange(keys.LEASES, 0, -1, withscores=True)
    assert {lease.decode() for lease, _ in leases} == set(claim.ids)
    holders = {k.decode(): v.decode() for k, v in (await client.hgetall(keys.HOLDERS)).items()}
    assert holders == dict.fromkeys(claim.ids, claim.token)
    c = await counters(client)
    assert (c["ready"], c["inflight"]) == (5, 20)
    # At least one chunk even when it is larger than asked for.
    assert [len(c.points) for c in decode(await queue.claim(1, lease_s=30))] == [5]


async def test_lease_deadlines_come_from_the_redis_clock(client: aioredis.Redis) -> None:
    queue = make_queue(client)
    await queue.enqueue(points(1))
    claim = await queue.claim(10, lease_s=30)
    seconds, micros = await client.time()
    deadline = await client.zscore(keys.LEASES, claim.ids[0])
    assert abs(deadline - (seconds * 1000 + micros // 1000 + 30_000)) < 1000


async def test_claim_takes_nothing_while_paused(client: aioredis.Redis) -> None:
    queue = make_queue(client)
    await queue.enqueue(points(3))
    await queue.pause()
    assert not await queue.claim(10, lease_s=30)
    await queue.resume()
    assert len((await queue.claim(10, lease_s=30)).raw) == 1


async def test_enqueue_is_refused_whole_past_the_bound(client: aioredis.Redis) -> None:
    queue = make_queue(client, batch=10, max_points=25)
    await queue.enqueue(points(20))
    with pytest.raises(QueueFull):
        await queue.enqueue(points(6, "x"))  # 26 > 25: nothing of it goes in
    c = await counters(client)
    assert (c["ready"], c["enqueued"]) == (20, 20)
    await queue.enqueue(points(5, "y"))  # exactly to the bound


async def test_coalesced_requests_share_calls_within_the_calls_bounds(
        client: aioredis.Redis) -> None:
    """Forty requests arrive together: they coalesce, but no call carries more than
    its bound of chunks, or of bytes; every point goes in, in order."""
    queue = make_queue(client, batch=10)
    queue.call_max_chunks = 5
    await asyncio.gather(*(queue.enqueue(points(1, f"a{i}-")) for i in range(20)))
    assert queue.largest_call[0] == 5 and queue.enqueue_calls >= 4
    one = len(Chunk("x-1", points(1, "b0-")).payload())
    queue.call_max_chunks, queue.call_max_bytes = 1000, 3 * one
    queue.largest_call = (0, 0)
    await asyncio.gather(*(queue.enqueue(points(1, f"b{i}-")) for i in range(20)))
    assert queue.largest_call[1] <= 3 * one and queue.largest_call[0] == 3
    ready = [i.decode() for i in await client.lrange(keys.READY, 0, -1)]
    ids = [Chunk.from_payload(i, await client.hget(keys.ITEMS, i)).points[0][0] for i in ready]
    assert ids == [f"a{i}-0" for i in range(20)] + [f"b{i}-0" for i in range(20)]
    assert (await counters(client))["ready"] == 40


@BOTH_PATHS
async def test_a_request_larger_than_a_call_is_cut_and_a_cut_past_the_bound_is_partial(
        client: aioredis.Redis, ingest_path: str) -> None:
    queue = make_queue(client, ingest_path, batch=10, max_points=45)
    queue.call_max_chunks = 2  # 20 points a call on the pipelined path, 2 on the naive
    await queue.enqueue(points(25))
    assert queue.largest_call[0] <= 2
    assert queue.enqueue_calls == (25 if ingest_path == "naive" else 2)
    assert (await counters(client))["ready"] == 25
    with pytest.raises(EnqueueInterrupted) as caught:
        await queue.enqueue(points(25, "x"))  # room for 20 more: the first call's
    assert (caught.value.accepted, caught.value.unknown) == (20, 0)
    assert (await counters(client))["ready"] == 45


async def test_settle_acknowledges_schedules_retries_and_dead_letters_in_one_step(
        client: aioredis.Redis) -> None:
    queue = make_queue(client, batch=10)
    await queue.enqueue(points(10))
    claim = await queue.claim(10, lease_s=30)
    (chunk,) = decode(claim)
    retry = Chunk("0000000000000000000000000000000a-2", list(chunk.points[:2]), attempts=1)
    dead = DeadLetter(chunk.points[2], "unknown_participant", 3, 1, 2, "no such participant")
    assert await queue.settle(claim, Settlement(acked=[chunk.id], committed=7,
                                                retries=[(retry, 60_000)], dead=[dead]))
    for key in (keys.LEASES, keys.HOLDERS):
        assert await client.exists(key) == 0
    assert await client.hexists(keys.ITEMS, chunk.id) == 0  # acknowledged: no trace
    seconds, _ = await client.time()
    assert abs(await client.zscore(keys.RETRY, retry.id) - (seconds * 1000 + 60_000)) < 2000
    assert Chunk.from_payload(retry.id, await client.hget(keys.ITEMS, retry.id)) == retry
    entry = orjson.loads(await client.hget(keys.DEAD, "1:p2"))  # <competition>:<id>
    assert (entry["reason"], entry["attempts"], entry["raw"][0]) == (
        "unknown_participant", 3, "p2")
    c = await counters(client)
    assert (c["inflight"], c["retry"], c["dead"], c["committed"]) == (0, 2, 1, 7)


async def test_a_settle_after_the_chunk_was_reclaimed_and_claimed_again_is_refused(
        client: aioredis.Redis) -> None:
    queue = make_queue(client, batch=10)
    await queue.enqueue(points(10))
    first = await queue.claim(10, lease_s=0.05)  # a worker that is too slow
    await asyncio.sleep(0.1)  # past its lease, on purpose: the reclaim proves it expired
    assert await queue.reclaim() == (1, 0)
    second = await queue.claim(10, lease_s=30)  # another worker has it now
    assert second.ids == first.ids and second.token != first.token
    retry = Chunk("0000000000000000000000000000000c-1", [decode(first)[0].points[0]], 1)
    stale = Settlement(acked=first.ids, committed=10, retries=[(retry, 0)])
    assert await queue.settle(first, stale) is False  # fenced: nothing applied
    assert await queue.release(first) == 0
    assert await queue.renew(first, 30) == 0
    assert await client.zcard(keys.RETRY) == 0  # no duplicate retry scheduled
    assert await client.hget(keys.HOLDERS, first.ids[0]) == second.token.encode()
    c = await counters(client)
    assert (c["inflight"], c.get("committed", 0)) == (10, 0)
    assert await queue.settle(second, Settlement(acked=second.ids, committed=10))
    c = await counters(client)
    assert (c["inflight"], c["committed"]) == (0, 10)


async def test_renew_extends_only_the_holders_leases(client: aioredis.Redis) -> None:
    queue = make_queue(client)
    await queue.enqueue(points(1))
    claim = await queue.claim(10, lease_s=0.2)
    (chunk_id,) = claim.ids
    first = await client.zscore(keys.LEASES, chunk_id)
    assert await queue.renew(Claim("not-the-holder", claim.raw), 60) == 0
    assert await client.zscore(keys.LEASES, chunk_id) == first  # fenced: untouched
    assert await queue.renew(claim, 30) == 1
    assert await client.zscore(keys.LEASES, chunk_id) >= first + 29_000
    await asyncio.sleep(0.3)  # past the lease it was claimed with
    assert await queue.reclaim() == (0, 0)  # renewed: not expired


async def test_dead_letter_queue_is_trimmed_by_count_and_by_age(
        client: aioredis.Redis) -> None:
    queue = make_queue(client, dead_max=3, dead_max_age_s=3600)
    old = DeadLetter(points(1, "old")[0], "data_error", 1, 1, 1, "x")
    await client.zadd(keys.DEAD_INDEX, {"old0": 1})  # failed in 1970: past the age bound
    await client.hset(keys.DEAD, "old0", old.entry())
    await client.hincrby(keys.STATS, "dead", 1)
    letters = [DeadLetter(p, "data_error", 1, 1, 1, "x") for p in points(5)]
    for letter in letters:
        await queue.settle(Claim("t", []), Settlement(dead=[letter]))
        await asyncio.sleep(0.002)  # distinct failure times, so "oldest" is defined
    await queue.settle(Claim("t", []), Settlement(dead=[
        DeadLetter(p, "data_error", 1, 1, 1, "x") for p in points(4, "many")]))
    remaining = {k.decode() for k in await client.hkeys(keys.DEAD)}
    assert remaining == {"1:many1", "1:many2", "1:many3"}  # one settle past the bound: trimmed too
    c = await counters(client)
    assert (c["dead"], c["dlq_dropped"], c["dead_lettered"]) == (3, 7, 9)


async def test_release_hands_chunks_back_unspent_or_counted(client: aioredis.Redis) -> None:
    queue = make_queue(client, batch=2)
    await queue.enqueue(points(6))
    first = await queue.claim(2, lease_s=30)
    assert await queue.release(first) == 1
    assert await queue.release(first) == 0  # only a held lease moves
    again = await queue.claim(2, lease_s=30)
    assert again.ids == first.ids and again.raw[0][2] == ""  # unspent: not counted
    assert await queue.release(again, error="KeyError: 'x'") == 1
    counted = await queue.claim(2, lease_s=30)
    assert handbacks_of(counted.raw[0][2]) == (1, "KeyError: 'x'")
    c = await counters(client)
    assert (c["ready"], c["inflight"]) == (4, 2)


async def test_reclaim_returns_expired_leases_first_in_order_and_due_retries_last(
        client: aioredis.Redis) -> None:
    queue = make_queue(client, batch=1)
    await queue.enqueue(points(4))
    first = await queue.claim(1, lease_s=0.05)
    second = await queue.claim(1, lease_s=0.06)
    kept = await queue.claim(1, lease_s=30)
    retry = Chunk("0000000000000000000000000000000b-1", [decode(kept)[0].points[0]], 1)
    await queue.settle(kept, Settlement(acked=kept.ids, retries=[(retry, 0)]))
    await asyncio.sleep(0.1)  # past both short leases, on purpose (the reclaim counts them)
    assert await queue.reclaim() == (2, 1)
    order = [i.decode() for i in await client.lrange(keys.READY, 0, -1)]
    assert order[:2] == first.ids + second.ids and order[-1] == retry.id
    # An expired lease is no handback (no error is counted against the chunk); it is
    # counted apart, as a holder lost with the chunk in hand.
    lost = {k.decode(): v.decode() for k, v in (await client.hgetall(keys.HANDBACKS)).items()}
    assert lost == {f"lost:{chunk_id}": "1" for chunk_id in first.ids + second.ids}
    c = await counters(client)
    assert (c["ready"], c["inflight"], c["retry"], c["reclaimed"]) == (4, 0, 0, 2)
    again = await queue.claim(10, lease_s=30)
    assert [handbacks_of(record) for _, _, record in again.raw] == [(0, "")] * 4
    assert again.lost == dict.fromkeys(first.ids + second.ids, 1)


async def test_dead_letters_can_be_requeued_once_and_purged(client: aioredis.Redis) -> None:
    queue = make_queue(client)
    letters = [DeadLetter(p, "unknown_participant", 8, 1, 2, "x") for p in points(3)]
    await queue.settle(Claim("t", []), Settlement(dead=letters))
    assert (await queue.dead.requeue(["1:p0", "nope"])).requeued == 1
    assert (await queue.dead.requeue(["1:p0"])).requeued == 0  # already moved: never twice
    (chunk,) = decode(await queue.claim(10, lease_s=30))
    assert (chunk.points, chunk.attempts) == ([list(letters[0].point)], 0)
    assert await queue.dead.purge(None) == 2
    c = await counters(client)
    assert (c["dead"], await client.hlen(keys.DEAD), await client.zcard(keys.DEAD_INDEX)) \
        == (0, 0, 0)


async def test_the_recent_commit_rate_comes_from_per_second_counts(
        client: aioredis.Redis) -> None:
    queue = make_queue(client)
    seconds, _ = await client.time()
    await client.hset(keys.COMMITTED_BY_S, mapping={seconds - 1: 300, seconds - 5: 200,
                                                    seconds - 30: 9999})
    assert await queue.committed_rate(10) == 50.0  # (300 + 200) / 10 s; older ignored
    await queue.enqueue(points(3))
    claim = await queue.claim(10, lease_s=30)
    await queue.settle(claim, Settlement(acked=claim.ids, committed=3))
    # Counted in the second it settled in (the clock may have ticked on since).
    since = {int(second): int(n) for second, n in
             (await client.hgetall(keys.COMMITTED_BY_S)).items() if int(second) >= seconds}
    assert sum(since.values()) == 3 and len(since) == 1


async def test_per_second_commit_counts_keep_only_the_last_minute_after_a_quiet_gap(
        client: aioredis.Redis) -> None:
    """The counts of a busy minute, then an hour of quiet (planted on Redis's clock):
    the next commit leaves nothing older than a minute, and the key expires."""
    queue = make_queue(client)
    seconds, _ = await client.time()
    busy = {seconds - 3600 - k: 10 for k in range(60)}  # the busy minute, an hour ago
    await client.hset(keys.COMMITTED_BY_S, mapping={**busy, seconds - 30: 7, "junk": 1})
    await queue.enqueue(points(3))
    claim = await queue.claim(10, lease_s=30)
    await queue.settle(claim, Settlement(acked=claim.ids, committed=3))
    left = {int(second): int(n) for second, n in
            (await client.hgetall(keys.COMMITTED_BY_S)).items()}
    now, _ = await client.time()
    assert all(now - 61 <= second <= now for second in left), left
    assert left.pop(seconds - 30) == 7 and sum(left.values()) == 3
    assert 0 < await client.pttl(keys.COMMITTED_BY_S) <= 120_000  # a quiet system keeps none


@BOTH_PATHS
async def test_with_wait_replicas_an_enqueue_no_replica_confirms_is_reported_unknown(
        replicated: SentinelGroup, ingest_path: str) -> None:
    """QUEUE_WAIT_REPLICAS=1: an enqueue returns once the replica has it; with the
    replica gone, WAIT gives up after its milliseconds and the call's points are
    unknown (ingest then writes them to PostgreSQL directly), not accepted."""
    client = aioredis.Redis.from_url(replicated.primary_url)
    replica = aioredis.Redis.from_url(replicated.primary_url.replace(
        str(replicated.primary.port), str(replicated.replica.port)))
    try:
        queue = make_queue(client, ingest_path, batch=10, wait_replicas=1,
                           wait_replicas_ms=200)
        await queue.enqueue(points(25))
        # Returned: the replica has the chunks already (no wait for it here).
        assert await replica.hlen(keys.ITEMS) == await client.hlen(keys.ITEMS) > 0
        await replica.aclose()
        await asyncio.to_thread(replicated.replica.stop)
        started = asyncio.get_running_loop().time()
        with pytest.raises(EnqueueInterrupted) as info:
            await queue.enqueue(points(5, "q"))
        # Naive: its first call (one point) failed, and ended it; pipelined: the
        # shared call (five).
        sent = 1 if ingest_path == "naive" else 5
        assert (info.value.accepted, info.value.unknown) == (0, sent)
        assert "0 of 1 replica(s)" in str(info.value.cause)
        assert 0.2 <= asyncio.get_running_loop().time() - started < 2
        assert (await counters(client))["enqueued"] == 25 + sent  # on the master alone
    finally:
        await client.aclose()
        await replica.aclose()
async def test_with_wait_replicas_a_group_the_bound_refused_is_queue_full_not_unknown(
        replicated: SentinelGroup) -> None:
    """One coalesced call whose script admits two groups and refuses the third (the
    bound), and no replica to confirm it: the two admitted are unknown (on the master
    alone), the refused one is queue_full — never written, so not unknown."""
    client = aioredis.Redis.from_url(replicated.primary_url)
    try:
        await asyncio.to_thread(replicated.replica.stop)
        queue = make_queue(client, "pipelined", batch=10, wait_replicas=1,
                           wait_replicas_ms=100, max_points=20)
        outcomes = await asyncio.gather(
            *(queue.enqueue(points(10, tag)) for tag in "abc"), return_exceptions=True)
        assert [type(o).__name__ for o in outcomes] == [
            "EnqueueInterrupted", "EnqueueInterrupted", "QueueFull"], outcomes
        assert (await counters(client))["enqueued"] == 20  # the two admitted, on the master
    finally:
        await client.aclose()


# --- shards (QUEUE_SHARDS) ------------------------------------------------------------


def on_shard(shard: int, count: int, taken: tuple[int, ...] = ()) -> int:
    """A competition id whose points go to ``shard`` of ``count`` (not one of ``taken``)."""
    return next(cid for cid in range(1, 1000)
                if keys.shard_of(cid, count) == shard and cid not in taken)


def of(cid: int, n: int, tag: str) -> list[tuple]:
    now = now_us()
    return [(f"{tag}{i}", cid, 1, 1.0, now, now) for i in range(n)]


async def shard_points(client: aioredis.Redis, shard: int) -> list[list]:
    at = keys.shard_keys(shard)
    ready = [i.decode() for i in await client.lrange(at.ready, 0, -1)]
    return [p for i in ready for p in Chunk.from_payload(i, await client.hget(at.items, i)).points]


@BOTH_PATHS
async def test_points_go_to_their_competitions_shard_in_their_order(
        client: aioredis.Redis, ingest_path: str) -> None:
    queue = make_queue(client, ingest_path, batch=4, shards=3)
    cids = [on_shard(0, 3), on_shard(1, 3), on_shard(2, 3)]
    cids.append(on_shard(1, 3, taken=tuple(cids)))
    request = [p for i in range(6) for cid in cids for p in of(cid, 1, f"{cid}-{i}-")]
    await queue.enqueue(request)  # one request, interleaved across every shard
    for shard in range(3):
        expected = [list(p) for p in request if keys.shard_of(p[1], 3) == shard]
        assert await shard_points(client, shard) == expected
    stats = await queue.stats()
    assert (stats["depth"], stats["totals"]["enqueued"]) == (24, 24)  # summed


async def test_claims_take_the_shards_in_turn_so_a_deep_one_starves_none(
        client: aioredis.Redis) -> None:
    queue = make_queue(client, batch=10, shards=3)
    deep, shallow = on_shard(0, 3), [on_shard(1, 3), on_shard(2, 3)]
    await queue.enqueue(of(deep, 100, "d"))
    for cid in shallow:
        await queue.enqueue(of(cid, 10, f"s{cid}-"))
    claims = [await queue.claim(10, lease_s=30) for _ in range(3)]
    assert sorted(claim.shard for claim in claims) == [0, 1, 2]
    for claim in claims:  # settled on the shard it came from
        assert await queue.renew(claim, 30) == 1
        assert await queue.settle(claim, Settlement(acked=claim.ids, committed=10))
    stats = await queue.stats()
    assert (stats["depth"], stats["inflight"], stats["totals"]["committed"]) == (90, 0, 30)


async def test_a_request_spanning_shards_one_of_them_full_is_partially_accepted(
        client: aioredis.Redis) -> None:
    """QUEUE_MAX_POINTS is shared out between the shards; a request whose first
    competition's shard has room and whose second's has not gets the first in only."""
    queue = make_queue(client, batch=10, shards=2, max_points=40)  # 20 points a shard
    full, roomy = on_shard(0, 2), on_shard(1, 2)
    await queue.enqueue(of(full, 15, "f"))
    with pytest.raises(EnqueueInterrupted) as caught:
        await queue.enqueue(of(roomy, 10, "r") + of(full, 10, "x"))
    assert (caught.value.accepted, caught.value.unknown) == (10, 0)
    assert isinstance(caught.value.cause, QueueFull)
    assert [p[0] for p in await shard_points(client, 1)] == [f"r{i}" for i in range(10)]
    assert len(await shard_points(client, 0)) == 15
    with pytest.raises(QueueFull):  # nothing of it fits: refused as it is
        await queue.enqueue(of(full, 6, "y"))


async def test_dead_letters_of_every_shard_are_listed_requeued_and_purged_together(
        client: aioredis.Redis) -> None:
    queue = make_queue(client, batch=10, shards=3)
    cids = [on_shard(shard, 3) for shard in range(3)]
    for failed_at, cid in enumerate(cids):
        letter = DeadLetter(of(cid, 1, "p")[0], "unknown_participant", 8, 1, 2, "x")
        await queue.settle(Claim("t", [], shard=keys.shard_of(cid, 3)),
                           Settlement(dead=[letter]))
        await client.zadd(keys.shard_keys(keys.shard_of(cid, 3)).dead_index,
                          {f"{cid}:p0": failed_at})  # a known order of failure
    assert (await queue.stats())["dead"] == 3
    page, after = await queue.dead.page(2, 0)
    assert [entry["key"] for entry in page] == [f"{cid}:p0" for cid in cids[:2]]
    rest, end = await queue.dead.page(2, after)
    assert ([entry["key"] for entry in rest], end) == ([f"{cids[2]}:p0"], None)
    assert (await queue.dead.requeue([f"{cids[1]}:p0"])).requeued == 1
    assert [p[0] for p in await shard_points(client, 1)] == ["p0"]  # back on its shard
    assert await queue.dead.purge(None) == 2
    assert (await queue.stats())["dead"] == 0
