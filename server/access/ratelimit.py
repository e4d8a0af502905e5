"""Rate limiting per token: GCRA in one Redis script, in-process while Redis fails.

GCRA (the generic cell rate algorithm, as in redis-cell) keeps one number per
token, its *theoretical arrival time* (TAT): the moment by which the token's
requests so far would have been sent at exactly ``RATE_LIMIT_PER_TOKEN`` a
second.  Each allowed request moves the TAT one emission interval ``T = 1/limit``
later; a request is refused while that would put the TAT more than the burst
tolerance ``burst × T`` ahead of now.  From rest, ``burst = 2 × limit`` requests
(at least 1) pass at once; after that they pass at the limit's pace.  A refused
request does not move the TAT: hammering costs a client nothing but its 429s.

Why GCRA: one small key per token (a timestamp, not a counter per window), no
window edges that let twice the burst through, and the figures clients are told
(remaining, reset, retry-after) fall out of the same arithmetic.

* **One script, Redis's clock.**  Read, decide and write are one Lua script that
  takes ``now`` from ``TIME`` on the Redis server, so every process and host on
  that Redis shares one limit whatever their own clocks say.  The key expires
  when its TAT is reached (from then on it would read as "at rest" anyway), so an
  idle token holds no key.
* **In-process fallback.**  When the call fails or takes more than
  ``REDIS_WAIT_S`` (Redis down, slow, at ``maxmemory``, or this process's pool
  busy), the same arithmetic runs on a
  bounded per-process dict with the monotonic clock, and Redis is left alone for
  ``REDIS_RETRY_S``: an outage neither fails requests nor lifts the limit.  It is
  per process, so with ``--processes N`` a token may get up to N × the limit
  while Redis is away (dividing the limit by N instead would starve a keep-alive
  client that one process serves).
* **Off costs nothing.**  With ``RATE_LIMIT_PER_TOKEN=0`` there is no limiter at
  all (``make_limiter`` returns None): no Redis call, no dict.

The figures (``Decision``): ``limit`` is the burst, ``remaining`` how many more
requests could pass right now, ``reset_s`` the time until the whole burst is
available again (the TAT), ``retry_after_s`` the time until a refused request's
next try would pass.  ``server/handlers/errors.py`` turns them into headers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import redis.asyncio as aioredis

from server import metrics
from server.errors import RateLimited, ServiceError
from server.queue.keys import RATE_LIMIT_PREFIX
from server.redis_client import translated_errors

log = logging.getLogger(__name__)

LOCAL_MAX = 10_000  # tokens tracked in-process while Redis is away
REDIS_RETRY_S = 1.0  # after a Redis failure, decide in-process this long before asking again
# A decision waits for Redis (its pool included) at most this long: a slow or
# unreachable Redis must not hold every request with a token for REDIS_TIMEOUT_S.
REDIS_WAIT_S = 0.25
_US = 1_000_000

# GCRA for one token, in microseconds of Redis's clock; mirrors ``gcra`` below.
# The TAT is written with '%.0f': a Lua number passed to redis.call is formatted
# with 14 significant digits, which would round a 16-digit timestamp.
# KEYS: the token's key   ARGV: interval_us tolerance_us
# Returns {allowed 0|1, remaining, retry_after_us, reset_us}.
GCRA = """
local interval, tolerance = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or 0)
if tat < now then tat = now end
local new_tat = tat + interval
if new_tat - now > tolerance then
  return {0, 0, new_tat - tolerance - now, tat - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX',
           math.ceil((new_tat - now) / 1000))
return {1, math.floor((tolerance - (new_tat - now)) / interval), 0, new_tat - now}
"""


@dataclass(frozen=True, slots=True)
class Decision:
    """One request's verdict and the figures a client is told."""

    allowed: bool
    limit: int  # the burst: requests that pass at once from rest
    remaining: int  # further requests that would pass right now
    reset_s: float  # until the whole burst is available again
    retry_after_s: float  # until the next request passes (0 when this one did)


def gcra(tat: int, now: int, interval: int, tolerance: int
         ) -> tuple[int | None, int, int, int]:
    """(new TAT or None when refused, remaining, retry_after, reset), all in one unit.

    The in-process twin of the ``GCRA`` script: same arithmetic, same results.
    """
    tat = max(tat, now)
    new_tat = tat + interval
    if new_tat - now > tolerance:
        return None, 0, new_tat - tolerance - now, tat - now
    return new_tat, (tolerance - (new_tat - now)) // interval, 0, new_tat - now


class RateLimiter:
    """``admit`` one request per call, for the token it names; shared through Redis."""

    def __init__(self, client: aioredis.Redis, per_s: float, *,
                 local_max: int = LOCAL_MAX) -> None:
        if per_s <= 0:
            raise ValueError(f"per_s must be > 0, got {per_s!r}")
        self.per_s = per_s
        self.burst = max(1, int(2 * per_s))
        self.interval_us = max(1, round(_US / per_s))
        self.tolerance_us = self.burst * self.interval_us
        self._script = client.register_script(GCRA)
        self._local: dict[bytes, int] = {}  # token hash -> TAT (µs, monotonic clock)
        self._local_max = local_max
        self._redis_retry_at = 0.0  # monotonic; 0 while Redis answers
        # This limiter's own counts (tests); /metrics has the process's.
        self.refused = 0
        self.local_decisions = 0

    async def admit(self, token_hash: bytes) -> Decision:
        """The figures for an allowed request; ``RateLimited`` when it is refused."""
        decision = await self.check(token_hash)
        if not decision.allowed:
            self.refused += 1
            metrics.RATE_LIMITED.inc()
            raise RateLimited(
                f"this token is over its rate limit ({self.per_s:g} requests/s, bursts of "
                f"{self.burst}); retry in {decision.retry_after_s:.2f} s",
                limit=decision.limit, remaining=decision.remaining,
                reset_s=decision.reset_s, retry_after_s=decision.retry_after_s)
        return decision

    async def check(self, token_hash: bytes) -> Decision:
        """Decide in Redis when it answers within ``REDIS_WAIT_S``, in-process when it
        does not; never raises.  While Redis is failing, one request a
        ``REDIS_RETRY_S`` probes it; the others decide in-process without waiting."""
        now = time.monotonic()
        if not self._redis_retry_at or now >= self._redis_retry_at:
            probing = bool(self._redis_retry_at)
            if probing:  # this request probes; those arriving meanwhile do not wait
                self._redis_retry_at = now + REDIS_RETRY_S
            try:
                async with asyncio.timeout(REDIS_WAIT_S):
                    with translated_errors():
                        allowed, remaining, retry_us, reset_us = await self._script(
                            keys=[RATE_LIMIT_PREFIX + token_hash.hex()],
                            args=[self.interval_us, self.tolerance_us])
            except (ServiceError, OSError, TimeoutError) as exc:
                if not probing:
                    log.warning("rate limiting in-process: Redis failed (%s)",
                                exc or type(exc).__name__)
                self._redis_retry_at = time.monotonic() + REDIS_RETRY_S
            else:
                if self._redis_retry_at:
                    log.info("rate limiting in Redis again")
                    self._redis_retry_at = 0.0
                return self._decision(bool(allowed), remaining, retry_us, reset_us)
        self.local_decisions += 1
        metrics.RATE_LIMIT_LOCAL.inc()
        return self._check_local(token_hash)

    def _check_local(self, token_hash: bytes) -> Decision:
        now = time.monotonic_ns() // 1000
        new_tat, remaining, retry_us, reset_us = gcra(
            self._local.get(token_hash, 0), now, self.interval_us, self.tolerance_us)
        if new_tat is not None:
            if token_hash not in self._local and len(self._local) >= self._local_max:
                self._evict(now)
            self._local[token_hash] = new_tat
        return self._decision(new_tat is not None, remaining, retry_us, reset_us)

    def _evict(self, now: int) -> None:
        """Make room: forget tokens at rest (as if absent), else the oldest half.

        Forgetting a token only grants it a fresh burst, so the bound never
        refuses anyone; halving keeps the cost of a full dict amortised.
        """
        self._local = {k: tat for k, tat in self._local.items() if tat > now}
        if len(self._local) >= self._local_max:
            keep = list(self._local.items())[len(self._local) // 2:]
            self._local = dict(keep)

    def _decision(self, allowed: bool, remaining: int, retry_us: int, reset_us: int
                  ) -> Decision:
        return Decision(allowed, self.burst, int(remaining), reset_us / _US, retry_us / _US)


def make_limiter(client: aioredis.Redis, per_s: float) -> RateLimiter | None:
    """The limiter for ``RATE_LIMIT_PER_TOKEN``, or None when it is 0 (off)."""
    return RateLimiter(client, per_s) if per_s > 0 else None
