"""Every Redis key the queue, caches and rate limiter use, in one place (arq's constants.py)."""

PREFIX = "pq:"
ITEMS = PREFIX + "items"  # HASH chunk id -> payload (orjson)
READY = PREFIX + "ready"  # LIST of chunk ids, FIFO (RPUSH / LPOP; handed-back go to the front)
LEASES = PREFIX + "leases"  # ZSET chunk id -> lease deadline (ms, Redis TIME)
HOLDERS = PREFIX + "holders"  # HASH chunk id -> claim token of its current holder (fencing)
HANDBACKS = PREFIX + "handbacks"  # HASH chunk id -> "count:last error" (unexpected handbacks)
#   ... and "lost:<chunk id>" -> leases that expired on it (holders that died or stalled)
RETRY = PREFIX + "retry"  # ZSET chunk id -> due time (ms, Redis TIME)
DEAD = PREFIX + "dead"  # HASH point id -> dead-letter entry (orjson)
DEAD_INDEX = PREFIX + "dead:index"  # ZSET point id -> last failure time (ms), for trim and paging
STATS = PREFIX + "stats"  # HASH counters, point units: ready inflight retry dead enqueued ...
COMMITTED_BY_S = PREFIX + "committed:by_s"  # HASH Redis-clock second -> points committed
#   (the last minute only: trimmed on every write, expires two minutes after the last)
PAUSED = PREFIX + "paused"  # STRING present while claiming is paused
CACHE_PREFIX = "cache:"  # read caches (leaderboard, stats, participant)
RATE_LIMIT_PREFIX = "rl:"  # STRING per token (hex of its hash) -> GCRA TAT (µs, Redis TIME)
IDEMPOTENCY_PREFIX = "idem:"  # HASH per Idempotency-Key (and ":cp" LIST), TTL IDEMPOTENCY_TTL_S
