"""Points queued under the key names of a version before queue shards are adopted by
shard 0 at start-up, so an upgrade strands none of them."""

from __future__ import annotations

from pathlib import Path

import redis

from server.config import Settings
from server.points import now_us
from server.queue import keys
from server.queue.chunks import Chunk
from server.runtime.prepare import Stores, stores_ready


def test_a_queue_left_under_the_old_key_names_is_adopted_by_the_next_start(
        tmp_path: Path, clean: Stores) -> None:
    settings = Settings(data_dir=tmp_path, database_url=clean.database_url)
    now = now_us()
    chunk = Chunk("00000000000000000000000000000001-2",
                  [("a", 1, 1, 1.0, now, now), ("b", 1, 1, 2.0, now, now)])
    with stores_ready(settings) as first:  # an older version's queue, left at its stop
        client = redis.Redis.from_url(first.redis_url or "")
        client.hset("pq:items", chunk.id, chunk.payload())
        client.rpush("pq:ready", chunk.id)
        client.hset("pq:stats", mapping={"ready": 2, "enqueued": 2})
        client.hset("pq:dead", "1:x", b"{}")
        client.hset(keys.DEAD, "1:y", b"{}")  # both names held: the old one stays
        client.close()
    for _ in range(2):  # the start after the upgrade, and any start after it
        with stores_ready(settings) as again:
            client = redis.Redis.from_url(again.redis_url or "")
            assert client.lrange(keys.READY, 0, -1) == [chunk.id.encode()]
            assert client.hget(keys.ITEMS, chunk.id) == chunk.payload()
            assert client.hget(keys.STATS, "enqueued") == b"2"
            assert client.exists("pq:items", "pq:ready", "pq:stats") == 0
            assert (client.hkeys("pq:dead"), client.hkeys(keys.DEAD)) == ([b"1:x"], [b"1:y"])
            client.close()
