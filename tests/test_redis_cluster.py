"""The service on a real Redis Cluster (``REDIS_URL=redis+cluster://...``): three
primaries with a replica each (``harness/redis_cluster.py``), the queue split in
three shards.  Ingest spanning every shard drains exactly once, and goes on after
a primary is killed -9 and its replica takes over.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.redis_cluster import RedisCluster
from server.queue import keys
from server.runtime.prepare import Stores
from tests.support import Api, assert_exact, drained, make_settings, serving, until

SHARDS = 3


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    nodes = RedisCluster(tmp_path / "cluster")
    try:
        yield nodes.start()
    finally:
        nodes.stop()


async def competitions(api: Api, shards: int) -> list[tuple[int, list[int]]]:
    """Competitions (id, participant ids) until every shard has at least two."""
    made: list[tuple[int, list[int]]] = []
    while min(sum(keys.shard_of(cid, shards) == s for cid, _ in made)
              for s in range(shards)) < 2:
        status, comp = await api.post("/v1/competitions",
                                      {"slug": f"c{len(made)}", "name": f"C{len(made)}"})
        assert status == 201, comp
        status, body = await api.post(
            f"/v1/competitions/{comp['id']}/participants",
            {"participants": [{"external_ref": f"p{i}", "display_name": f"P{i}"}
                              for i in range(3)]})
        assert status == 201, body
        made.append((comp["id"], [p["id"] for p in body["participants"]]))
    return made


def spanning(comps: list[tuple[int, list[int]]], tag: str, per: int = 20) -> dict:
    """One request with ``per`` points of every competition, interleaved (every shard)."""
    return {"points": [{"id": f"{tag}-{cid}-{i}", "competition_id": cid,
                        "participant_id": parts[i % len(parts)], "value": i % 7 + 1}
                       for i in range(per) for cid, parts in comps]}


async def post_until_accepted(api: Api, body: dict) -> dict:
    """Post, re-sending the same ids until a 202 (a client's contract after a 5xx)."""
    answer: dict = {}

    async def accepted() -> bool:
        nonlocal answer
        status, answer = await api.post("/v1/points", body)
        return status == 202

    await until(accepted, "the request accepted", 15, interval_s=0.2)
    return answer


async def test_three_shards_on_a_cluster_drain_exactly_once_across_a_primary_failover(
        clean: Stores, cluster: RedisCluster) -> None:
    settings = make_settings(queue_workers=2, queue_shards=SHARDS, queue_lease_s=3.0)
    async with serving(settings, clean.database_url, cluster.url) as (service, api):
        comps = await competitions(api, SHARDS)
        accepted: set[str] = set()
        for round_ in range(4):
            accepted.update((await post_until_accepted(api, spanning(comps, f"a{round_}")))
                            ["ids"])
        # Each shard's queue lives on one primary; kill the one holding shard 0, mid-drain,
        # once its replica has every write (what a primary acknowledged and did not yet
        # replicate is lost by Redis itself: README).
        victim = cluster.primary_of(keys.shard_keys(0).ready)
        await until(lambda: cluster.caught_up(victim), "the replica caught up", 10)
        cluster.kill(victim)
        for round_ in range(4):  # during the failover: queued, or written directly
            accepted.update((await post_until_accepted(api, spanning(comps, f"b{round_}")))
                            ["ids"])
        await until(lambda: asyncio.to_thread(cluster.failed_over, victim,
                                              keys.shard_keys(0).ready),
                    "the replica took over", 20)
        rounds = 0

        async def queued_again() -> bool:  # Redis's breaker lets a probe through, ~1 s
            nonlocal rounds
            body = await post_until_accepted(api, spanning(comps, f"c{rounds}"))
            accepted.update(body["ids"])
            rounds += 1
            return not body.get("committed")

        # (Until every client has the new slot map, a call may still meet the dead
        # node: its breaker opens again for a second and ingest writes directly.)
        await until(queued_again, "ingest through the queue again", 15, interval_s=0.1)
        for round_ in range(3):
            accepted.update((await post_until_accepted(api, spanning(comps, f"d{round_}")))
                            ["ids"])
        await drained(service, len(accepted), clean, timeout_s=30)
        assert_exact(clean, accepted)
        for shard in keys.all_shards(SHARDS):  # every shard's queue carried points
            assert int(await service.deps.redis.hget(shard.stats, "enqueued") or 0) > 0
