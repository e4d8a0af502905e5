"""The dead-letter queue's requeue: within the queue's bound, always ending, never failing
on an entry that is not ours."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from server.points import now_us
from server.queue import keys
from server.queue.chunks import DeadLetter, Settlement
from server.queue.redis_queue import Claim
from server.runtime.lifecycle import Service
from tests.support import Api, make_settings, seed, until


@pytest.fixture
def settings(request: pytest.FixtureRequest, ingest_path: str):
    # A failed point is dead-lettered at its first attempt: requeued, it fails again at once.
    return make_settings(**{"ingest_path": ingest_path, "queue_max_attempts": 1,
                            **getattr(request, "param", {})})


async def plant_dead(service: Service, cid: int, participant: int, n: int) -> None:
    """``n`` dead letters, as a worker leaves them (through SETTLE)."""
    now = now_us()
    letters = [DeadLetter((f"d{i}", cid, participant, 1.0, now, now), "unknown_participant",
                          1, 1, 2, "x") for i in range(n)]
    for start in range(0, n, 1000):
        await service.deps.queue.settle(Claim("t", []),
                                        Settlement(dead=letters[start:start + 1000]))


@pytest.mark.parametrize("settings", [{"queue_max_points": 5}], indirect=True)
async def test_requeue_stops_at_the_queue_bound_and_says_how_many_stayed(
        api: Api, service: Service) -> None:
    cid, parts = await seed(api)
    await plant_dead(service, cid, parts[0], 4)
    assert (await api.post("/v1/points", {"points": [
        {"competition_id": cid, "participant_id": parts[0], "value": 1}] * 3}))[0] == 202
    assert await api.post("/v1/admin/dlq/requeue", {"all": True}) == (
        200, {"requeued": 2, "refused_queue_full": 2, "not_requeueable": 0})
    stats = await service.deps.queue.stats()
    assert (stats["depth"], stats["dead"]) == (5, 2)  # the bound, and the rest kept
    keys = [f"{cid}:d{i}" for i in range(4)]  # dead letters are keyed in their competition
    assert await api.post("/v1/admin/dlq/requeue", {"ids": keys}) == (
        200, {"requeued": 0, "refused_queue_full": 2, "not_requeueable": 0})
    # A queue over its bound (a bound lowered since, as a restart with a smaller
    # QUEUE_MAX_POINTS does) has no room at all, not an unbounded one.
    service.deps.queue.dead.max_points = 3
    assert await api.post("/v1/admin/dlq/requeue", {"ids": keys}) == (
        200, {"requeued": 0, "refused_queue_full": 2, "not_requeueable": 0})


@pytest.mark.parametrize("settings", [{"queue_workers": 2, "queue_batch_size": 100}],
                         indirect=True)
async def test_requeue_all_ends_while_the_requeued_points_fail_again(
        api: Api, service: Service) -> None:
    """Workers run meanwhile and dead-letter each requeued point again at once: the
    requeue moves each entry it found once, and ends."""
    cid, _ = await seed(api)
    await plant_dead(service, cid, 999, 3000)
    status, body = await asyncio.wait_for(
        api.post("/v1/admin/dlq/requeue", {"all": True}), 30)
    assert status == 200 and body["requeued"] == 3000, body

    async def all_dead_again() -> bool:
        stats = await service.deps.queue.stats()
        return stats["dead"] == 3000 and stats["depth"] == stats["inflight"] == 0

    await until(all_dead_again, "every requeued point dead-lettered again")
    assert (await service.deps.queue.stats())["totals"]["dead_lettered"] == 6000
    # Each planted entry (failed in 1970) was requeued, so each failed anew: once each.
    entries = [orjson.loads(e) for e in (await service.deps.redis.hgetall(keys.DEAD)).values()]
    assert len(entries) == 3000
    assert not [e for e in entries if e["last_failed_at"].startswith("1970")]


UNREADABLE = {"junk": b"\xff\x00 not json", "number": b"42", "no-reason": b'{"raw": 1}',
              "bad-raw": b'{"reason": "unknown_participant", "raw": [1, 2]}'}


async def test_an_unreadable_entry_is_shown_kept_and_purged_never_a_500(
        api: Api, service: Service) -> None:
    cid, parts = await seed(api)
    await plant_dead(service, cid, parts[0], 1)
    redis = service.deps.redis
    await redis.hset(keys.DEAD, mapping=UNREADABLE)
    seconds, _ = await redis.time()
    await redis.zadd(keys.DEAD_INDEX, dict.fromkeys(UNREADABLE, seconds * 1000))
    # Indexed with no entry: one named in UTF-8, one not (none of ours either way).
    await redis.zadd(keys.DEAD_INDEX, {"ghost": seconds * 1000, b"\xff\xfe": seconds * 1000})
    status, page = await api.get("/v1/admin/dlq")
    assert status == 200, page
    assert sorted(item["reason"] for item in page["items"]) == [
        "unknown_participant", "unknown_participant", "unreadable_entry", "unreadable_entry",
        "unreadable_entry"]
    assert await api.post("/v1/admin/dlq/requeue", {"ids": [*UNREADABLE, "ghost"]}) == (
        200, {"requeued": 0, "refused_queue_full": 0, "not_requeueable": 4})
    assert await api.post("/v1/admin/dlq/requeue", {"all": True}) == (
        200, {"requeued": 1, "refused_queue_full": 0, "not_requeueable": 4})
    assert await service.deps.workers.drain() == 1  # the good one, requeued
    assert await api.request("DELETE", "/v1/admin/dlq", json={"all": True}) == (
        200, {"purged": 4})
