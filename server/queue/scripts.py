"""The queue's Lua scripts: each state change of a chunk is one atomic script.

Why Lua over Streams consumer groups: a chunk moves between ready, leased, retry
and dead together with the point counters that ``/ready`` and the admin view read;
a script makes each move and its counters one atomic step, so a ``kill -9`` of the
server at any instant leaves Redis consistent.  Streams would give leases
(XPENDING/XAUTOCLAIM) but not due-time retries or the counters in the same step.

Chunk ids end in ``-<points in chunk>`` so scripts can count points without
decoding payloads.
"""

# KEYS: items ready stats   ARGV: id1 payload1 id2 payload2 ...
ENQUEUE = """
local total = 0
for i = 1, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('RPUSH', KEYS[2], ARGV[i])
  total = total + tonumber(string.match(ARGV[i], '(%d+)$'))
end
redis.call('HINCRBY', KEYS[3], 'ready', total)
redis.call('HINCRBY', KEYS[3], 'enqueued', total)
return total
"""

# KEYS: items ready leases stats paused   ARGV: now_ms lease_ms max_points
CLAIM = """
if redis.call('EXISTS', KEYS[5]) == 1 then return {} end
local out, taken = {}, 0
local deadline = tonumber(ARGV[1]) + tonumber(ARGV[2])
local max_points = tonumber(ARGV[3])
while taken < max_points do
  local id = redis.call('LPOP', KEYS[2])
  if not id then break end
  local n = tonumber(string.match(id, '(%d+)$'))
  local payload = redis.call('HGET', KEYS[1], id)
  redis.call('HINCRBY', KEYS[4], 'ready', -n)
  if payload then
    redis.call('ZADD', KEYS[3], deadline, id)
    redis.call('HINCRBY', KEYS[4], 'inflight', n)
    out[#out + 1] = id
    out[#out + 1] = payload
    taken = taken + n
  end
end
return out
"""

# Settle a claim after its PostgreSQL transaction: acknowledge the claimed chunks,
# schedule retries, dead-letter what is spent.  One atomic step.
# KEYS: items leases retry stats dead dead_index
# ARGV: now_ms committed n_ack ack_ids... n_retry (id payload due_ms)... n_dead
#       (point_id entry points)... dead_max dead_max_age_ms
SETTLE = """
local now = tonumber(ARGV[1])
redis.call('HINCRBY', KEYS[4], 'committed', tonumber(ARGV[2]))
local i = 3
local n_ack = tonumber(ARGV[i]); i = i + 1
for _ = 1, n_ack do
  local id = ARGV[i]; i = i + 1
  if redis.call('ZREM', KEYS[2], id) == 1 then
    redis.call('HDEL', KEYS[1], id)
    redis.call('HINCRBY', KEYS[4], 'inflight', -tonumber(string.match(id, '(%d+)$')))
  end
end
local n_retry = tonumber(ARGV[i]); i = i + 1
for _ = 1, n_retry do
  local id, payload, due = ARGV[i], ARGV[i + 1], ARGV[i + 2]; i = i + 3
  local n = tonumber(string.match(id, '(%d+)$'))
  redis.call('HSET', KEYS[1], id, payload)
  redis.call('ZADD', KEYS[3], due, id)
  redis.call('HINCRBY', KEYS[4], 'retry', n)
  redis.call('HINCRBY', KEYS[4], 'retried', n)
end
local n_dead = tonumber(ARGV[i]); i = i + 1
for _ = 1, n_dead do
  local id, entry = ARGV[i], ARGV[i + 1]; i = i + 2
  if redis.call('HSET', KEYS[5], id, entry) == 1 then
    redis.call('HINCRBY', KEYS[4], 'dead', 1)
  end
  redis.call('ZADD', KEYS[6], now, id)
  redis.call('HINCRBY', KEYS[4], 'dead_lettered', 1)
end
-- Bounded dead-letter queue: drop the oldest beyond the count and the age limits.
local dead_max, max_age = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
local old = redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', now - max_age, 'LIMIT', 0, 1000)
local excess = redis.call('ZCARD', KEYS[6]) - #old - dead_max
if excess > 0 then
  local oldest = redis.call('ZRANGE', KEYS[6], #old, #old + excess - 1)
  for _, id in ipairs(oldest) do old[#old + 1] = id end
end
for _, id in ipairs(old) do
  if redis.call('ZREM', KEYS[6], id) == 1 then
    redis.call('HDEL', KEYS[5], id)
    redis.call('HINCRBY', KEYS[4], 'dead', -1)
  end
end
return #old
"""

# Hand claimed chunks back unspent (store outage, shutdown): front of the queue.
# KEYS: leases ready stats   ARGV: ids...
RELEASE = """
local moved = 0
for i = #ARGV, 1, -1 do
  local id = ARGV[i]
  if redis.call('ZREM', KEYS[1], id) == 1 then
    local n = tonumber(string.match(id, '(%d+)$'))
    redis.call('LPUSH', KEYS[2], id)
    redis.call('HINCRBY', KEYS[3], 'inflight', -n)
    redis.call('HINCRBY', KEYS[3], 'ready', n)
    moved = moved + 1
  end
end
return moved
"""

# Expired leases go back to the front; due retries go to the back.
# KEYS: leases retry ready stats   ARGV: now_ms limit
RECLAIM = """
local now, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(expired) do
  local n = tonumber(string.match(id, '(%d+)$'))
  redis.call('ZREM', KEYS[1], id)
  redis.call('LPUSH', KEYS[3], id)
  redis.call('HINCRBY', KEYS[4], 'inflight', -n)
  redis.call('HINCRBY', KEYS[4], 'ready', n)
  redis.call('HINCRBY', KEYS[4], 'reclaimed', n)
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

# Requeue dead-lettered points, each as a fresh chunk with its attempts reset.
# Only entries still in the DLQ move, so concurrent requeues cannot duplicate.
# KEYS: dead dead_index items ready stats   ARGV: (point_id chunk_id payload)...
REQUEUE_DEAD = """
local moved = 0
for i = 1, #ARGV, 3 do
  if redis.call('HDEL', KEYS[1], ARGV[i]) == 1 then
    redis.call('ZREM', KEYS[2], ARGV[i])
    redis.call('HSET', KEYS[3], ARGV[i + 1], ARGV[i + 2])
    redis.call('RPUSH', KEYS[4], ARGV[i + 1])
    redis.call('HINCRBY', KEYS[5], 'dead', -1)
    redis.call('HINCRBY', KEYS[5], 'ready', 1)
    moved = moved + 1
  end
end
return moved
"""

# KEYS: dead dead_index stats   ARGV: point ids... (none = everything)
PURGE_DEAD = """
if #ARGV == 0 then
  local n = redis.call('HLEN', KEYS[1])
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('HSET', KEYS[3], 'dead', 0)
  return n
end
local purged = 0
for _, id in ipairs(ARGV) do
  if redis.call('HDEL', KEYS[1], id) == 1 then
    redis.call('ZREM', KEYS[2], id)
    redis.call('HINCRBY', KEYS[3], 'dead', -1)
    purged = purged + 1
  end
end
return purged
"""
