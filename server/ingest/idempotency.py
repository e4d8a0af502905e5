"""Idempotency-Key records: a key remembers its request and its answer.

As the IETF draft (draft-ietf-httpapi-idempotency-key-header) has it: the first
request with a key binds the key to the request's *fingerprint* — here a head
(method, path, the query and media type that change its meaning) and a digest of
its body bytes — for ``IDEMPOTENCY_TTL_S`` (24 h) from its first use, scoped to
the caller's token.  Then:

* the same key with another fingerprint is refused (``IdempotencyKeyReused``,
  422) and changes nothing;
* the same key while its first request still runs is refused
  (``IdempotencyKeyInFlight``, 409, retry shortly);
* the same key and body after a success answers what the first did (``DONE``:
  the stored status and body);
* after a failure — an error, a dropped connection, a process killed — the key
  stays bound to its fingerprint and the same request runs again (``RESUME``):
  the ids derived from the key make that harmless.  A failure that certainly
  accepted nothing frees the key.

One Redis hash per key (``idem:{<digest of token hash and key>}``), bounded by its
TTL; a streamed upload adds a list of *checkpoints* beside it (below).  While a
request runs, its record is leased (``IDEMPOTENCY_LEASE_S``) and the lease is
renewed by a heartbeat: the key of a process that died is taken over once its
lease runs out, never blocked for the whole TTL.

**Streamed uploads.**  A bulk body's digest is known only at its end, but its
lines are enqueued as they arrive.  So before each chunk of lines is enqueued,
the digest of the body up to the end of the chunk's last line is recorded (a
checkpoint: offset and digest).  A later attempt under the same key checks its
own body against those checkpoints as it streams, and enqueues no line that
lies before an unchecked checkpoint: a different body is refused (422) before
any of its lines could take the id of a line the earlier attempt may have
enqueued.  Past the last checkpoint nothing was enqueued, so nothing needs
checking.  After a success the whole body's digest is kept, and a resend is
read to its end (enqueuing nothing) to be answered from the record, or refused.

Redis unavailable — down, full (``maxmemory``), silent for ``wait_s``
(``REQUEST_STORE_WAIT_S``, as the enqueue), or its circuit breaker open: the key
is not checked (logged); the request runs as one without a record would, and the
ids derived from the key still make a resend harmless.  But once an upload's key
is recorded, a checkpoint that cannot be recorded stops the upload there (503,
``accepted_through_line``): enqueuing (or writing directly) lines the record does
not cover would let a later, different body under the key take their ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from server.errors import (
    CommitUnknown,
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
    QueueFull,
    StoreUnavailable,
)
from server.queue import keys
from server.queue.breaker import CircuitBreaker
from server.redis_client import translated_errors

log = logging.getLogger(__name__)

NEW, RESUME, DONE = "new", "resume", "done"  # how a request with a key begins
RECORD_RETRY_S = 0.25  # an outcome Redis did not take is tried again this often

# KEYS: record, checkpoints.  ARGV: head, body digest ('' = not known yet), owner,
# lease ms, ttl s.  The record: head, digest, state (in_flight | open | done), owner,
# lease (deadline, ms on Redis's clock), touched ('1': something may have been
# accepted under the key), status, answer.
BEGIN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local r = redis.call('HMGET', KEYS[1], 'head', 'digest', 'state', 'lease', 'status', 'answer')
if not r[1] then
  redis.call('HSET', KEYS[1], 'head', ARGV[1], 'digest', ARGV[2], 'state', 'in_flight',
             'owner', ARGV[3], 'lease', now + tonumber(ARGV[4]), 'touched', '0')
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  redis.call('DEL', KEYS[2])
  return {'new'}
end
if r[1] ~= ARGV[1] or (ARGV[2] ~= '' and r[2] ~= '' and r[2] ~= ARGV[2]) then
  return {'reused'}
end
if r[3] == 'done' then return {'done', r[5], r[6], r[2]} end
if r[3] == 'in_flight' then
  local left = tonumber(r[4]) - now
  if left > 0 then return {'in_flight', tostring(left)} end
  redis.call('HSET', KEYS[1], 'touched', '1')  -- its holder died mid-way
end
redis.call('HSET', KEYS[1], 'state', 'in_flight', 'owner', ARGV[3],
           'lease', now + tonumber(ARGV[4]))
return {'resume', redis.call('LRANGE', KEYS[2], 0, -1)}
"""

_HOLDER = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local r = redis.call('HMGET', KEYS[1], 'owner', 'state')
if r[1] ~= ARGV[1] or r[2] ~= 'in_flight' then return 0 end
"""

# KEYS: record.  ARGV: owner, lease ms.
RENEW = _HOLDER + """
redis.call('HSET', KEYS[1], 'lease', now + tonumber(ARGV[2]))
return 1
"""

# KEYS: record, checkpoints.  ARGV: owner, lease ms, "offset:digest[:end]".
CHECKPOINT = _HOLDER + """
local last = redis.call('LINDEX', KEYS[2], -1)
local offset = tonumber(string.match(ARGV[3], '^(%d+):'))
if (not last) or tonumber(string.match(last, '^(%d+):')) < offset then
  redis.call('RPUSH', KEYS[2], ARGV[3])
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
end
redis.call('HSET', KEYS[1], 'touched', '1', 'lease', now + tonumber(ARGV[2]))
return 1
"""

# KEYS: record, checkpoints.  ARGV: owner, lease ms (unused), outcome (done | open |
# abandon), digest, status, answer.
FINISH = _HOLDER + """
if ARGV[3] == 'done' then
  redis.call('HSET', KEYS[1], 'state', 'done', 'digest', ARGV[4], 'status', ARGV[5],
             'answer', ARGV[6])
  redis.call('HDEL', KEYS[1], 'owner', 'lease')
  redis.call('DEL', KEYS[2])
elseif ARGV[3] == 'open' or redis.call('HGET', KEYS[1], 'touched') == '1' then
  redis.call('HSET', KEYS[1], 'state', 'open', 'touched', '1')
  redis.call('HDEL', KEYS[1], 'owner', 'lease')
else
  redis.call('DEL', KEYS[1], KEYS[2])
end
return 1
"""


def body_digest(body: bytes) -> str:
    """The body part of a request's fingerprint."""
    return hashlib.blake2b(body, digest_size=32).hexdigest()


@dataclass
class Begun:
    """How a request with a key begins: ``NEW``, ``RESUME`` (an earlier attempt failed;
    ``checkpoints`` it left), or ``DONE`` (``status`` and ``answer`` to replay, when
    the body's digest is ``digest``)."""

    outcome: str
    checkpoints: list[tuple[int, str, bool]] = field(default_factory=list)
    status: int = 0
    answer: bytes = b""
    digest: str = ""


class IdempotencyKeys:
    """The records of every key, in Redis."""

    def __init__(self, client: aioredis.Redis, *, ttl_s: float, lease_s: float,
                 wait_s: float | None = None, breaker: CircuitBreaker | None = None) -> None:
        self.ttl_s = max(1, int(ttl_s))
        self.lease_ms = max(1, int(lease_s * 1000))
        self.wait_s = wait_s  # longest wait for one call (None: the client's timeout)
        self.breaker = breaker  # Redis's: while it is open, no call is tried
        self._begin = client.register_script(BEGIN)
        self._renew = client.register_script(RENEW)
        self._checkpoint = client.register_script(CHECKPOINT)
        self._finish = client.register_script(FINISH)

    async def call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """One script call as the request path makes them: refused at once while
        Redis's breaker is open (half-open, this call may be its probe), given up
        (as maybe applied) after ``wait_s``; a failure of Redis opens the breaker,
        as a failed enqueue does, so the request's next call does not wait again."""
        breaker = self.breaker
        gate = breaker.try_pass() if breaker is not None else None
        if breaker is not None and gate is False:
            raise breaker.refused()
        try:
            try:
                async with asyncio.timeout(self.wait_s):
                    with translated_errors():
                        reply = await script(keys=keys, args=args)
            except TimeoutError:  # cancelled in flight: it may have run
                raise CommitUnknown("redis", "Redis did not answer an Idempotency-Key "
                                    f"call within {self.wait_s:g}s") from None
        except BaseException as exc:
            if breaker is not None:
                breaker.tell(gate, exc)
            raise
        if breaker is not None:
            breaker.tell(gate)
        return reply

    @staticmethod
    def record_key(scope: bytes, key: str) -> str:
        # The digest is the key's hash tag: the record and its ":cp" list share a
        # slot on a Redis Cluster (the scripts touch both).
        return keys.IDEMPOTENCY_PREFIX + "{" + hashlib.blake2b(
            scope + b"\0" + key.encode(), digest_size=16).hexdigest() + "}"

    async def begin(self, scope: bytes, key: str, head: str, digest: str = ""
                    ) -> tuple[Begun, KeyHold]:
        """Bind ``key`` to this request, or say why not (raises ``IdempotencyKeyReused``,
        ``IdempotencyKeyInFlight``).  The hold must be finished (``KeyHold.finish``)."""
        hold = KeyHold(self, self.record_key(scope, key))
        try:
            reply = await self.call(self._begin, hold.keys, [
                head, digest, hold.owner, self.lease_ms, self.ttl_s])
        except (StoreUnavailable, QueueFull) as exc:  # no record: the key's ids still
            # protect a resend
            log.warning("Idempotency-Key not checked: %s", exc)
            hold.unchecked = True
            # A lost reply: the record may exist, held by this request; its outcome is
            # still recorded, so that it is not left in flight until its lease runs out.
            hold.maybe_recorded = isinstance(exc, CommitUnknown)
            return Begun(NEW), hold
        outcome = reply[0].decode()
        if outcome == "reused":
            raise IdempotencyKeyReused(
                "this Idempotency-Key was used for a different request (another method, "
                "path, query, content type or body); use a new key for a new request")
        if outcome == "in_flight":
            raise IdempotencyKeyInFlight(
                "a request with this Idempotency-Key is still being processed; retry "
                "when it has finished", retry_after_s=1)
        if outcome == DONE:
            hold.finished = True  # nothing to record: the answer is the stored one
            return Begun(DONE, status=int(reply[1]), answer=bytes(reply[2]),
                         digest=reply[3].decode()), hold
        hold.start_heartbeat()
        if outcome == RESUME:
            return Begun(RESUME, checkpoints=[_parse_checkpoint(raw) for raw in reply[1]]), hold
        return Begun(NEW), hold


def _parse_checkpoint(raw: bytes) -> tuple[int, str, bool]:
    offset, digest, *end = raw.decode().split(":")
    return int(offset), digest, bool(end)


class KeyHold:
    """One request's hold on its key's record: heartbeat, checkpoints, outcome."""

    def __init__(self, store: IdempotencyKeys, record: str) -> None:
        self.store = store
        self.keys = [record, record + ":cp"]
        self.owner = uuid.uuid4().hex
        self.unchecked = False  # Redis did not answer the begin
        self.maybe_recorded = False  # ... though it may have run it
        self.finished = False
        self._heartbeat: asyncio.Task | None = None
        self._closing: asyncio.Task | None = None

    def start_heartbeat(self) -> None:
        self._heartbeat = asyncio.get_running_loop().create_task(self._renew_lease())

    def stop_heartbeat(self) -> None:
        """Stop renewing the lease (as a process that died would)."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()

    async def _renew_lease(self) -> None:
        while True:
            await asyncio.sleep(self.store.lease_ms / 3000)
            try:
                with translated_errors():
                    if not await self.store._renew(keys=self.keys[:1],
                                                   args=[self.owner, self.store.lease_ms]):
                        return  # no longer ours (finished, or taken over)
            except StoreUnavailable as exc:
                log.debug("Idempotency-Key lease not renewed: %s", exc)

    async def checkpoint(self, offset: int, digest: str, *, end: bool = False) -> None:
        """Record that the body up to ``offset`` (digest) may now be accepted.

        Raises ``IdempotencyKeyInFlight`` when the key is no longer this request's (its
        lease ran out and another request took it over): going on could enqueue lines
        the other one has not checked.
        """
        if self.unchecked:
            return
        entry = f"{offset}:{digest}" + (":end" if end else "")
        try:
            held = await self.store.call(self.store._checkpoint, self.keys, [
                self.owner, self.store.lease_ms, entry])
        except (StoreUnavailable, QueueFull) as exc:
            # Not a reason to go on without the record: stop where it ends.
            raise StoreUnavailable("redis", "Redis could not record the upload's progress "
                                   "under its Idempotency-Key; resend with the key",
                                   reason=str(exc)) from exc
        if not held:
            raise IdempotencyKeyInFlight(
                "another request with this Idempotency-Key took it over; this one stopped",
                retry_after_s=1)

    def finish_soon(self, outcome: str) -> None:
        """``finish`` from a callback that cannot wait (a connection closed)."""
        if not self.finished and self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self.finish(outcome))

    async def finish(self, outcome: str, *, digest: str = "", status: int = 0,
                     answer: bytes = b"") -> None:
        """``done`` (store the answer), ``open`` (something may have been accepted: the
        key stays bound) or ``abandon`` (nothing was: free the key, unless an earlier
        attempt may have accepted something)."""
        if self.finished:
            return
        self.finished = True
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        if self.unchecked and not self.maybe_recorded:
            return
        args: list[str | int | bytes] = [self.owner, 0, outcome, digest, status, answer]
        try:
            await self._record(args)
        except (StoreUnavailable, QueueFull) as exc:
            # Tried again in the background while the lease lasts (once Redis is back,
            # a resend need not wait for the lease); after it, a resend takes over.
            log.warning("Idempotency-Key outcome not recorded yet: %s", exc)
            self._closing = asyncio.get_running_loop().create_task(self._record_later(args))

    async def _record(self, args: list[str | int | bytes]) -> None:
        await self.store.call(self.store._finish, self.keys, args)

    async def _record_later(self, args: list[str | int | bytes]) -> None:
        deadline = asyncio.get_running_loop().time() + self.store.lease_ms / 1000
        while asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(RECORD_RETRY_S)
            with contextlib.suppress(StoreUnavailable, QueueFull):
                await self._record(args)
                return


class StreamDigest:
    """The digest of a streamed body, checked against an earlier attempt's checkpoints.

    Bytes are hashed lazily (``advance``), so that the digest at any line end still to
    be hashed can be taken; checkpoints of the earlier attempt are checked as soon as
    their bytes have arrived (``receive``).  ``verified``: the body up to there is
    the earlier attempt's; ``limit``: past it the earlier attempt enqueued nothing.
    """

    def __init__(self, checkpoints: list[tuple[int, str, bool]] | None = None) -> None:
        self._hash = hashlib.blake2b(digest_size=32)
        self._pending: deque[bytes] = deque()
        self.hashed = 0  # bytes hashed
        self.received = 0  # bytes received
        self._expected = deque(checkpoints or ())
        self.limit = self._expected[-1][0] if self._expected else 0
        self.verified = 0

    def receive(self, data: bytes) -> None:
        """Take the next bytes; IdempotencyKeyReused if a checkpoint they complete differs."""
        self._pending.append(data)
        self.received += len(data)
        while self._expected and self._expected[0][0] <= self.received:
            offset, digest, end = self._expected[0]
            if end and self.received > offset:  # the earlier body ended there; this one not
                raise self.differs()
            if end:
                return  # checked at the end of the body (``close``)
            self._check(offset, digest)

    def close(self) -> str:
        """The whole body's digest, once the last checkpoints are checked."""
        if self._expected:
            offset, digest, _ = self._expected[0]
            if offset != self.received:
                raise self.differs()
            self._check(offset, digest)
        return self.at(self.received)

    def _check(self, offset: int, digest: str) -> None:
        if self.at(offset) != digest:
            raise self.differs()
        self._expected.popleft()
        self.verified = offset

    @staticmethod
    def differs() -> IdempotencyKeyReused:
        return IdempotencyKeyReused(
            "this Idempotency-Key was used for an upload whose body differs from this one; "
            "no line past the point where the bodies part was accepted (use a new key for "
            "a new upload)")

    def may_enqueue(self, offset: int) -> bool:
        """Whether lines ending at ``offset`` may be enqueued: checked, or new ground."""
        return offset <= self.verified or offset > self.limit

    def advance(self, offset: int) -> None:
        """Hash the body up to ``offset`` (at most what was received)."""
        while self.hashed < offset and self._pending:
            head = self._pending[0]
            take = min(len(head), offset - self.hashed)
            if take == len(head):
                self._hash.update(self._pending.popleft())
            else:
                self._hash.update(memoryview(head)[:take])
                self._pending[0] = head[take:]
            self.hashed += take

    def at(self, offset: int) -> str:
        """The digest of the body up to ``offset`` (never before what is hashed already)."""
        if offset < self.hashed:
            raise ValueError(f"offset {offset} is behind the hashed {self.hashed} bytes")
        self.advance(offset)
        return self._hash.copy().hexdigest()
