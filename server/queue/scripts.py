"""The queue's Lua scripts: each state change of a chunk is one atomic script.

Why Lua over Streams consumer groups: a chunk moves between ready, leased, retry
and dead together with the point counters that ``/ready`` and the admin view
read; a script makes each move and its counters one atomic step, so a ``kill -9``
of the server at any instant leaves Redis consistent.  Streams would give leases
(XPENDING/XAUTOCLAIM) but not due-time retries or the counters in the same step.

Rules every script follows:

* **Redis's clock.** Lease deadlines and retry due times come from ``TIME`` on
  the Redis server, never from the hosts' clocks, which may disagree.
* **Fencing.** A claim carries a token; ``pq:holders`` maps each leased chunk to
  the token of its current holder.  Settle, release and renew take effect only
  for chunks the caller still holds: a worker whose lease expired (and whose
  chunk another worker now holds) can no longer acknowledge it, hand it back
  or schedule its retries.
* **Free before grow.** At ``maxmemory`` Redis 6.2 refuses a script whose
  *first* write could grow memory (``denyoom``), and lets it continue once it
  has written.  Every script that settles or returns work therefore starts with
  a write that frees (ZREM/HDEL/LPOP), so acknowledgements always go through
  when Redis is full, and memory falls as workers drain.  Only ENQUEUE grows
  first — at ``maxmemory`` it is refused whole, which is the point.
* **Counted handbacks.** A chunk handed back by an unexpected error (or whose
  payload does not decode) has its count raised in ``pq:handbacks``
  (``"n:last error"``); workers dead-letter a chunk handed back too often
  instead of looping on it.  Store outages and shutdowns are nobody's fault and
  are not counted.  An expired lease is counted apart, under ``lost:<chunk id>``
  in the same hash: a chunk whose holders keep dying with it (a point that
  crashes the process) is dead-lettered too, as ``crashed_holder``.

Chunk ids end in ``-<points in chunk>`` so scripts count points without
decoding payloads.
"""


def _drop_dead(*, dead: int, index: int, stats: int) -> str:
    """Lua defining ``drop(ids)``: remove those dead letters (entry, index, the ``dead``
    counter), counting them in ``dropped``; the numbers are the scripts' KEYS positions."""
    return f"""
local dropped = 0
local function drop(ids)
  for _, id in ipairs(ids) do
    if redis.call('ZREM', KEYS[{index}], id) == 1 then
      redis.call('HDEL', KEYS[{dead}], id)
      redis.call('HINCRBY', KEYS[{stats}], 'dead', -1)
      dropped = dropped + 1
    end
  end
end
"""


# Enqueue groups of chunks (one group per request; several requests coalesce
# into one call).  Groups are admitted in order while the queue stays within
# max_points (0 = no bound); a group that does not fit, and every group after it,
# is refused whole.  Returns {groups admitted, queued points before, bound}.
# KEYS: items ready stats   ARGV: max_points (n_chunks (id payload)...)...
ENQUEUE = """
local bound = tonumber(ARGV[1])
local queued = 0
if bound > 0 then
  local c = redis.call('HMGET', KEYS[3], 'ready', 'inflight', 'retry')
  queued = (tonumber(c[1]) or 0) + (tonumber(c[2]) or 0) + (tonumber(c[3]) or 0)
end
local i, admitted, total = 2, 0, 0
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  local size = 0
  for k = 0, n - 1 do
    size = size + tonumber(string.match(ARGV[i + 1 + 2 * k], '(%d+)$'))
  end
  if bound > 0 and queued + total + size > bound then break end
  for k = 0, n - 1 do
    redis.call('HSET', KEYS[1], ARGV[i + 1 + 2 * k], ARGV[i + 2 + 2 * k])
    redis.call('RPUSH', KEYS[2], ARGV[i + 1 + 2 * k])
  end
  total = total + size
  admitted = admitted + 1
  i = i + 1 + 2 * n
end
if total > 0 then
  redis.call('HINCRBY', KEYS[3], 'ready', total)
  redis.call('HINCRBY', KEYS[3], 'enqueued', total)
end
return {admitted, queued, bound}
"""

# KEYS: items ready leases stats paused holders handbacks
# ARGV: lease_ms max_points token
# Returns {id, payload, handbacks, leases lost, id, payload, handbacks, leases lost, ...}.
CLAIM = """
if redis.call('EXISTS', KEYS[5]) == 1 then return {} end
local t = redis.call('TIME')
local deadline = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
local max_points, token = tonumber(ARGV[2]), ARGV[3]
local out, taken = {}, 0
while taken < max_points do
  local id = redis.call('LPOP', KEYS[2])
  if not id then break end
  local n = tonumber(string.match(id, '(%d+)$'))
  local payload = redis.call('HGET', KEYS[1], id)
  redis.call('HINCRBY', KEYS[4], 'ready', -n)
  if payload then
    redis.call('ZADD', KEYS[3], deadline, id)
    redis.call('HSET', KEYS[6], id, token)
    redis.call('HINCRBY', KEYS[4], 'inflight', n)
    local handed = redis.call('HGET', KEYS[7], id)
    out[#out + 1] = id
    out[#out + 1] = payload
    out[#out + 1] = handed or ''
    out[#out + 1] = redis.call('HGET', KEYS[7], 'lost:' .. id) or '0'
    taken = taken + n
  end
end
return out
"""

# Extend the leases of the chunks the caller still holds.
# KEYS: leases holders   ARGV: token lease_ms ids...   Returns how many are still held.
RENEW = """
-- A write that frees nothing, first: it lets the ZADDs below run at maxmemory.
redis.call('HDEL', KEYS[2], '')
local t = redis.call('TIME')
local deadline = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[2])
local held = 0
for i = 3, #ARGV do
  if redis.call('HGET', KEYS[2], ARGV[i]) == ARGV[1] then
    redis.call('ZADD', KEYS[1], 'XX', deadline, ARGV[i])
    held = held + 1
  end
end
return held
"""

# Settle a claim after its PostgreSQL transactions: acknowledge the claimed chunks,
# schedule retries, dead-letter what is spent.  One atomic step, and only if the
# caller still holds every acknowledged chunk (else nothing at all: the new
# holder will settle them).  Returns {settled (0/1), dead-letter entries trimmed}.
# KEYS: items leases retry stats dead dead_index holders handbacks committed_by_s
# ARGV: token committed n_ack ack_ids... n_retry (id payload delay_ms)...
#       n_dead (point_id entry)... dead_max dead_max_age_ms
SETTLE = _drop_dead(dead=5, index=6, stats=4) + """
local token = ARGV[1]
local i = 3
local n_ack = tonumber(ARGV[i]); i = i + 1
for k = 0, n_ack - 1 do
  if redis.call('HGET', KEYS[7], ARGV[i + k]) ~= token then return {0, 0} end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _ = 1, n_ack do
  local id = ARGV[i]; i = i + 1
  redis.call('ZREM', KEYS[2], id)
  redis.call('HDEL', KEYS[7], id)
  redis.call('HDEL', KEYS[1], id)
  redis.call('HDEL', KEYS[8], id, 'lost:' .. id)
  redis.call('HINCRBY', KEYS[4], 'inflight', -tonumber(string.match(id, '(%d+)$')))
end
-- Bounded dead-letter queue: entries past the age limit go first (freeing before
-- anything grows), entries beyond the count limit after the new ones are added.
local n_retry = tonumber(ARGV[i])
local n_dead = tonumber(ARGV[i + 1 + 3 * n_retry])
local limits = i + 2 + 3 * n_retry + 2 * n_dead
local dead_max, max_age = tonumber(ARGV[limits]), tonumber(ARGV[limits + 1])
drop(redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', now - max_age, 'LIMIT', 0, 1000))
local committed = tonumber(ARGV[2])
if committed > 0 then
  -- Per second, for the admin view's recent commit rate.  Every write drops each
  -- field older than a minute (however long the system was quiet before it), so
  -- the hash holds at most 61 fields; and the key expires two minutes after the
  -- last commit, so a quiet system keeps none.
  local second = math.floor(now / 1000)
  local stale = {}
  for _, field in ipairs(redis.call('HKEYS', KEYS[9])) do
    local at = tonumber(field)
    if at == nil or at < second - 60 then stale[#stale + 1] = field end
    if #stale == 1000 then redis.call('HDEL', KEYS[9], unpack(stale)); stale = {} end
  end
  if #stale > 0 then redis.call('HDEL', KEYS[9], unpack(stale)) end
  redis.call('HINCRBY', KEYS[9], second, committed)
  redis.call('PEXPIRE', KEYS[9], 120000)
end
redis.call('HINCRBY', KEYS[4], 'committed', committed)
i = i + 1
for _ = 1, n_retry do
  local id, payload, delay = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]); i = i + 3
  local n = tonumber(string.match(id, '(%d+)$'))
  redis.call('HSET', KEYS[1], id, payload)
  redis.call('ZADD', KEYS[3], now + delay, id)
  redis.call('HINCRBY', KEYS[4], 'retry', n)
  redis.call('HINCRBY', KEYS[4], 'retried', n)
end
i = i + 1
for _ = 1, n_dead do
  local id, entry = ARGV[i], ARGV[i + 1]; i = i + 2
  if redis.call('HSET', KEYS[5], id, entry) == 1 then
    redis.call('HINCRBY', KEYS[4], 'dead', 1)
  end
  redis.call('ZADD', KEYS[6], now, id)
  redis.call('HINCRBY', KEYS[4], 'dead_lettered', 1)
end
local excess = redis.call('ZCARD', KEYS[6]) - dead_max
if excess > 0 then drop(redis.call('ZRANGE', KEYS[6], 0, excess - 1)) end
if dropped > 0 then redis.call('HINCRBY', KEYS[4], 'dlq_dropped', dropped) end
return {1, dropped}
"""

# Hand held chunks back to the front of the queue (store outage, shutdown, or an
# unexpected error — counted then, with the error, in handbacks).
# KEYS: leases ready stats holders handbacks   ARGV: token count(0/1) error ids...
RELEASE = """
local moved = 0
for i = #ARGV, 4, -1 do
  local id = ARGV[i]
  if redis.call('HGET', KEYS[4], id) == ARGV[1] then
    local n = tonumber(string.match(id, '(%d+)$'))
    redis.call('ZREM', KEYS[1], id)
    redis.call('HDEL', KEYS[4], id)
    redis.call('LPUSH', KEYS[2], id)
    redis.call('HINCRBY', KEYS[3], 'inflight', -n)
    redis.call('HINCRBY', KEYS[3], 'ready', n)
    if ARGV[2] == '1' then
      local seen = tonumber(string.match(redis.call('HGET', KEYS[5], id) or '', '^(%d+)')) or 0
      redis.call('HSET', KEYS[5], id, (seen + 1) .. ':' .. ARGV[3])
    end
    moved = moved + 1
  end
end
return moved
"""

# Expired leases go back to the front, oldest deadline first (their holder is
# gone or cut off: the lease no longer belongs to it), each counted against its
# chunk as a lost holder; due retries go to the back.
# KEYS: leases retry ready stats holders handbacks   ARGV: limit
RECLAIM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
for k = #expired, 1, -1 do
  local id = expired[k]
  local n = tonumber(string.match(id, '(%d+)$'))
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[5], id)
  redis.call('LPUSH', KEYS[3], id)
  redis.call('HINCRBY', KEYS[4], 'inflight', -n)
  redis.call('HINCRBY', KEYS[4], 'ready', n)
  redis.call('HINCRBY', KEYS[4], 'reclaimed', n)
  redis.call('HINCRBY', KEYS[6], 'lost:' .. id, 1)
end
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(due) do
  local n = tonumber(string.match(id, '(%d+)$'))
  redis.call('ZREM', KEYS[2], id)
  redis.call('RPUSH', KEYS[3], id)
  redis.call('HINCRBY', KEYS[4], 'retry', -n)
  redis.call('HINCRBY', KEYS[4], 'ready', n)
end
return {#expired, #due}
"""

# Pause claiming.  KEYS: paused holders (a write that frees nothing comes first,
# so an operator can pause a Redis that is at maxmemory).
PAUSE = """
redis.call('HDEL', KEYS[2], '')
redis.call('SET', KEYS[1], '1')
return 1
"""

# Requeue dead-lettered points, each as a fresh chunk with its attempts reset.
# Only entries still in the DLQ move, so concurrent requeues cannot duplicate.
# The queue's admission bound holds as for ENQUEUE: points move while the queue
# stays within max_points (0 = no bound); the rest stay dead-lettered.
# Returns {moved, refused for the bound}.
# KEYS: dead dead_index items ready stats   ARGV: max_points (point_id chunk_id payload)...
REQUEUE_DEAD = """
local bound = tonumber(ARGV[1])
local room = 0  -- negative when the queue is over the bound (a bound lowered since)
if bound > 0 then
  local c = redis.call('HMGET', KEYS[5], 'ready', 'inflight', 'retry')
  room = bound - (tonumber(c[1]) or 0) - (tonumber(c[2]) or 0) - (tonumber(c[3]) or 0)
end
local moved, refused = 0, 0
for i = 2, #ARGV, 3 do
  if bound > 0 and moved >= room then
    if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then refused = refused + 1 end
  elseif redis.call('HDEL', KEYS[1], ARGV[i]) == 1 then
    redis.call('ZREM', KEYS[2], ARGV[i])
    redis.call('HSET', KEYS[3], ARGV[i + 1], ARGV[i + 2])
    redis.call('RPUSH', KEYS[4], ARGV[i + 1])
    redis.call('HINCRBY', KEYS[5], 'dead', -1)
    redis.call('HINCRBY', KEYS[5], 'ready', 1)
    moved = moved + 1
  end
end
return {moved, refused}
"""

# KEYS: dead dead_index stats   ARGV: point ids... (none = everything)
PURGE_DEAD = _drop_dead(dead=1, index=2, stats=3) + """
if #ARGV == 0 then
  local n = redis.call('HLEN', KEYS[1])
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('HSET', KEYS[3], 'dead', 0)
  return n
end
drop(ARGV)
return dropped
"""
