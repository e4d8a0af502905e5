"""Every Redis key the queue, caches and rate limiter use, in one place (arq's constants.py).

**Shards and hash tags.**  The queue is ``QUEUE_SHARDS`` independent queues
(``shard_keys``).  Every key of one shard carries the shard's hash tag (``{q0}``,
``{q1}``, ...): on a Redis Cluster, a key's slot is the hash of its tag alone,
so a shard's keys share one slot and every Lua script — which may only touch
the keys it is given, all in one slot — runs on one node.  The module-level
names (``ITEMS``, ``READY``, ...) are shard 0's, the only shard when
``QUEUE_SHARDS=1``.

Points are routed to a shard by competition (``shard_of``), so a competition's
points keep their order, and its standings one writer's view, on one shard.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

PREFIX = "pq:"
CACHE_PREFIX = "cache:"  # read caches (leaderboard, stats, participant): one key per call
RATE_LIMIT_PREFIX = "rl:"  # STRING per token (hex of its hash) -> GCRA TAT (µs, Redis TIME)
IDEMPOTENCY_PREFIX = "idem:"  # HASH per Idempotency-Key ``idem:{digest}`` (and its ":cp"
#   LIST, same tag, same slot), TTL IDEMPOTENCY_TTL_S


@dataclass(frozen=True)
class ShardKeys:
    """The keys of one queue shard, all under its hash tag (one cluster slot)."""

    shard: int
    items: str  # HASH chunk id -> payload (orjson)
    ready: str  # LIST of chunk ids, FIFO (RPUSH / LPOP; handed-back go to the front)
    leases: str  # ZSET chunk id -> lease deadline (ms, Redis TIME)
    holders: str  # HASH chunk id -> claim token of its current holder (fencing)
    handbacks: str  # HASH chunk id -> "count:last error" (unexpected handbacks)
    #   ... and "lost:<chunk id>" -> leases that expired on it (holders that died or stalled)
    retry: str  # ZSET chunk id -> due time (ms, Redis TIME)
    dead: str  # HASH point key -> dead-letter entry (orjson)
    dead_index: str  # ZSET point key -> last failure time (ms), for trim and paging
    stats: str  # HASH counters, point units: ready inflight retry dead enqueued ...
    committed_by_s: str  # HASH Redis-clock second -> points committed
    #   (the last minute only: trimmed on every write, expires two minutes after the last)
    paused: str  # STRING present while claiming is paused (set on every shard)


def shard_keys(shard: int) -> ShardKeys:
    base = f"{PREFIX}{{q{shard}}}:"
    return ShardKeys(shard, base + "items", base + "ready", base + "leases",
                     base + "holders", base + "handbacks", base + "retry", base + "dead",
                     base + "dead:index", base + "stats", base + "committed:by_s",
                     base + "paused")


def all_shards(count: int) -> tuple[ShardKeys, ...]:
    return tuple(shard_keys(shard) for shard in range(count))


def shard_of(competition_id: object, count: int) -> int:
    """The shard of a competition's points, the same in every process and every run, so
    all of one competition's points go to one shard: its id modulo the shards (ids are
    handed out in sequence, so competitions spread evenly), or a CRC32 of any other key."""
    if count == 1:
        return 0
    if isinstance(competition_id, int):
        return competition_id % count
    return zlib.crc32(str(competition_id).encode()) % count


_SHARD0 = shard_keys(0)
ITEMS = _SHARD0.items
READY = _SHARD0.ready
LEASES = _SHARD0.leases
HOLDERS = _SHARD0.holders
HANDBACKS = _SHARD0.handbacks
RETRY = _SHARD0.retry
DEAD = _SHARD0.dead
DEAD_INDEX = _SHARD0.dead_index
STATS = _SHARD0.stats
COMMITTED_BY_S = _SHARD0.committed_by_s
PAUSED = _SHARD0.paused
