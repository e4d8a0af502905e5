"""Every Redis key the queue and caches use, in one place (arq's constants.py idea)."""

PREFIX = "pq:"
ITEMS = PREFIX + "items"  # HASH chunk id -> payload (orjson)
READY = PREFIX + "ready"  # LIST of chunk ids, FIFO (RPUSH / LPOP; handed-back go to the front)
LEASES = PREFIX + "leases"  # ZSET chunk id -> lease deadline (ms since epoch)
RETRY = PREFIX + "retry"  # ZSET chunk id -> due time (ms)
DEAD = PREFIX + "dead"  # HASH point id -> dead-letter entry (orjson)
DEAD_INDEX = PREFIX + "dead:index"  # ZSET point id -> last failure time (ms), for trim and paging
STATS = PREFIX + "stats"  # HASH counters, point units: ready inflight retry dead enqueued ...
PAUSED = PREFIX + "paused"  # STRING present while claiming is paused
CACHE_PREFIX = "cache:"  # read caches (leaderboard, stats, participant)

QUEUE_KEYS = (ITEMS, READY, LEASES, RETRY, DEAD, DEAD_INDEX, STATS, PAUSED)
