"""Cached reads: leaderboard pages whatever the query string."""

from __future__ import annotations

import redis

from server.queue.keys import CACHE_PREFIX
from server.runtime.lifecycle import Service
from server.runtime.prepare import Stores
from tests.support import Api, seed, sql

RANKED = 250  # participants with a standing: pages 0, 1 and 2 (half full)


async def ranked_competition(api: Api, stores: Stores) -> tuple[int, list[int]]:
    """A competition whose participants have distinct totals, best first: participant
    ``ids[i]`` has rank i + 1."""
    cid, ids = await seed(api, RANKED)
    for rank, pid in enumerate(ids):
        sql(stores, "INSERT INTO standings (competition_id, participant_id, total, points) "
                    "VALUES (%s, %s, %s, 1)", cid, pid, float(10_000 - rank))
    return cid, ids


def leaderboard_keys(stores: Stores, cid: int) -> list[bytes]:
    """The competition's leaderboard keys in Redis now (each lives LEADERBOARD_TTL_S)."""
    client = redis.Redis.from_url(stores.redis_url)  # type: ignore[arg-type]
    try:
        return sorted(client.scan_iter(f"{CACHE_PREFIX}lb:{cid}:*"))
    finally:
        client.close()


def computed_keys(service: Service, cid: int) -> list[str]:
    """Every leaderboard key of the competition this process computed during the test:
    its in-process copies are only dropped when the map is full (10,000 entries), so
    none of them expires from this list as Redis's copies do."""
    prefix = f"{CACHE_PREFIX}lb:{cid}:"
    return sorted(key for key in service.deps.cache._local if key.startswith(prefix))


async def test_leaderboard_cache_keys_stay_bounded_under_many_distinct_query_strings(
        service: Service, api: Api, clean: Stores) -> None:
    cid, ids = await ranked_competition(api, clean)
    shapes = {(limit, offset) for limit in (1, 7, 50, 99, 100, 101, 250, 1000)
              for offset in (0, 1, 42, 99, 100, 150, 199, 200, 249, 250, 251, 5000,
                             9_999_999)}
    shapes |= {(3, offset) for offset in range(0, 300, 7)}
    for limit, offset in sorted(shapes):
        status, board = await api.get(
            f"/v1/competitions/{cid}/leaderboard?limit={limit}&offset={offset}", token="read")
        assert status == 200, board
        assert [(e["rank"], e["participant_id"]) for e in board["entries"]] == [
            (rank + 1, ids[rank]) for rank in range(offset, min(offset + limit, RANKED))
        ], (limit, offset)
    # Three pages hold ranks (100 + 100 + 50); and the count of ranked participants.
    assert len(shapes) > 100
    assert computed_keys(service, cid) == [f"{CACHE_PREFIX}lb:{cid}:{name}"
                                           for name in ("p0", "p1", "p2", "rows")]


async def test_the_default_leaderboard_is_one_cached_page_served_as_is(
        api: Api, clean: Stores) -> None:
    cid, _ = await ranked_competition(api, clean)
    first = await api.response("GET", f"/v1/competitions/{cid}/leaderboard", token="read")
    again = await api.response("GET", f"/v1/competitions/{cid}/leaderboard?limit=100&offset=0",
                               token="read")
    assert first.code == again.code == 200
    assert first.body == again.body  # the same cached bytes, as_of included
    assert leaderboard_keys(clean, cid) == [f"{CACHE_PREFIX}lb:{cid}:p0".encode()]


async def test_a_leaderboard_past_its_end_is_empty_and_an_unknown_one_404(
        service: Service, api: Api, clean: Stores) -> None:
    cid, _ = await ranked_competition(api, clean)
    status, board = await api.get(f"/v1/competitions/{cid}/leaderboard?offset=100000",
                                  token="read")
    assert (status, board["entries"]) == (200, [])
    assert board["as_of"]
    for offset in (0, 100000):
        status, body = await api.get(f"/v1/competitions/{cid + 1}/leaderboard?offset={offset}",
                                     token="read")
        assert status == 404, body
    assert computed_keys(service, cid + 1) == []
    assert computed_keys(service, cid) == [f"{CACHE_PREFIX}lb:{cid}:rows"]
