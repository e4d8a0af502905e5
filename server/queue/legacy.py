"""The queue's keys as versions before queue shards named them, adopted by shard 0.

Before ``QUEUE_SHARDS`` the queue's keys had no hash tag (``pq:items``,
``pq:ready``, ...).  A Redis upgraded with points still queued under those names
would strand them: nothing claims from them any more.  At start-up (before any
worker runs) one script renames each old key that exists to shard 0's name, all
at once; a key present under both names (an older process still writing next to
this one) is left alone and reported.  On a Redis Cluster there is nothing to
adopt: no version before this one ran on a cluster.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from server.queue import keys
from server.redis_client import translated

_SHARD0 = keys.shard_keys(0)
OLD_NAMES = {  # name before shards -> shard 0's
    "pq:items": _SHARD0.items, "pq:ready": _SHARD0.ready, "pq:leases": _SHARD0.leases,
    "pq:holders": _SHARD0.holders, "pq:handbacks": _SHARD0.handbacks,
    "pq:retry": _SHARD0.retry, "pq:dead": _SHARD0.dead, "pq:dead:index": _SHARD0.dead_index,
    "pq:stats": _SHARD0.stats, "pq:committed:by_s": _SHARD0.committed_by_s,
    "pq:paused": _SHARD0.paused,
}

# KEYS: old new old new ...   Returns {renamed, left because both names exist}.
ADOPT = """
local renamed, both = 0, {}
for i = 1, #KEYS, 2 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    if redis.call('EXISTS', KEYS[i + 1]) == 0 then
      redis.call('RENAME', KEYS[i], KEYS[i + 1])
      renamed = renamed + 1
    else
      both[#both + 1] = KEYS[i]
    end
  end
end
return {renamed, both}
"""


@translated
async def adopt_old_keys(client: aioredis.Redis) -> tuple[int, list[str]]:
    """Rename the old keys to shard 0's; (keys renamed, old keys left: both names held)."""
    flat = [name for pair in OLD_NAMES.items() for name in pair]
    renamed, both = await client.eval(ADOPT, len(flat), *flat)
    return int(renamed), [name.decode() for name in both]
