"""The point queue in Redis: enqueue, claim under a lease, settle, hand back, reclaim.

Delivery is at-least-once: a chunk leaves Redis only when ``settle`` runs, and a
worker settles only after its PostgreSQL transaction committed.  A worker that
dies in between leaves a lease that ``reclaim`` returns to the queue after
``QUEUE_LEASE_S``; the idempotent insert turns the redelivery into a no-op.

**Shards.**  The queue is ``QUEUE_SHARDS`` independent queues, each under its
own hash tag (``keys.py``: one Redis Cluster slot each, so every script runs on
one node).  A request's points go to their competitions' shards (``enqueue``
splits them, one enqueue per shard, concurrently); a claim takes from one shard,
the shards taken in turn (``claim``); the counters, the commit rate and the
dead letters are the sums over the shards.  With one shard, every path is the
same code with a single group.

Every method raises domain errors, never a redis-py exception:
``StoreUnavailable("redis")`` when Redis fails (``PoolTimeout`` when only this
process's pool is busy), ``QueueFull`` past the admission bound or at Redis's
``maxmemory``, ``EnqueueInterrupted`` when an enqueue stopped part-way.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import copy
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from server import metrics
from server.errors import (
    CommandRefused,
    CommitUnknown,
    EnqueueInterrupted,
    QueueFull,
    ReplicasShort,
    ServiceError,
    StoreUnavailable,
)
from server.points import COMPETITION_ID, Point
from server.queue import keys, scripts
from server.queue.chunks import Chunk, Settlement, chunk_enqueued_ms, chunk_size, new_chunk_ids
from server.queue.dead_letters import DeadLetterQueue
from server.queue.strategy import IngestStrategy
from server.queue.wakeup import WakeUp
from server.redis_client import translated, translated_errors

RECLAIM_LIMIT = 1000  # chunks moved per reclaim call; the reclaimer loops while busy
# An ENQUEUE that failed this way may have written (part of) its chunks: a lost
# reply, or an error Redis raised inside the script (a script stops where it
# fails; what it wrote before stays).  Its points are unknown, never "not accepted".
MAYBE_RAN = (CommitUnknown, CommandRefused)
# Bounds of one ENQUEUE call.  A script runs alone in Redis: every other client
# waits for it, and past ``lua-time-limit`` (5 s) they are answered BUSY.  Measured
# on the embedded Redis 6.2 (AOF, appendfsync always; INFO commandstats): ~4.3 µs
# per chunk entered (2,000 one-point chunks: 9 ms) and ~0.7 ms per MB of payload
# (1,000-point chunks: 10,000 points in 0.2 ms, 200,000 points / 14 MB in 9 ms).
# So a call carries at most 2,000 chunks (on the naive path, or of small coalesced
# requests, that is 2,000 points) and 8 MiB: ~10 ms of Redis's time at most.
ENQUEUE_MAX_CHUNKS = 2000
ENQUEUE_MAX_BYTES = 8 << 20


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Claim:
    """Chunks leased together under one fencing token, still undecoded.

    ``raw`` holds (chunk id, payload, handback record) per chunk; decoding is the
    worker's business, inside its guarded block, so a payload that cannot be
    decoded is handed back (and counted) like any other failure.  ``lost`` counts,
    per chunk, the earlier holders whose lease expired with it (died or stalled).
    """

    token: str
    raw: list[tuple[str, bytes, str]]
    lost: dict[str, int] = field(default_factory=dict)
    shard: int = 0  # the queue shard the chunks were claimed from

    @property
    def ids(self) -> list[str]:
        return [chunk_id for chunk_id, _, _ in self.raw]

    def subset(self, ids: Sequence[str]) -> Claim:
        """The same claim (same token), limited to ``ids``."""
        wanted = set(ids)
        return Claim(self.token, [entry for entry in self.raw if entry[0] in wanted],
                     {k: v for k, v in self.lost.items() if k in wanted}, self.shard)

    def __bool__(self) -> bool:
        return bool(self.raw)


def handbacks_of(record: str) -> tuple[int, str]:
    """(count, last error) from a handbacks record ``"n:error"`` ('' = none)."""
    count, _, error = record.partition(":")
    return (int(count) if count.isdigit() else 0), error


def queue_full(queued: int, bound: int) -> QueueFull:
    return QueueFull(f"the queue is full ({queued} of {bound} points queued); retry shortly")


class PointQueue:
    """The queue's operations; the ingest path decides how they are grouped."""

    def __init__(self, client: aioredis.Redis, strategy: IngestStrategy, *,
                 dead_max: int = 100_000, dead_max_age_s: float = 7 * 86400,
                 max_points: int = 0, call_wait_s: float | None = None,
                 wait_replicas: int = 0, wait_replicas_ms: int = 100,
                 shards: int = 1) -> None:
        self.redis = client
        self.strategy = strategy
        self.shards = keys.all_shards(shards)  # QUEUE_SHARDS
        self._next_shard = 0  # the shard the next claim tries first (round-robin)
        # An ENQUEUE call's reply is awaited this long (REQUEST_STORE_WAIT_S), not for
        # REDIS_TIMEOUT_S: past it the call's outcome is unknown (``CommitUnknown``)
        # and ingest writes those points to PostgreSQL directly.  None: no bound.
        self.call_wait_s = call_wait_s
        # QUEUE_WAIT_REPLICAS(_MS): an ENQUEUE call is answered only once this many
        # replicas have its write (WAIT on its connection); 0 = Redis's reply is enough.
        self.wait_replicas = wait_replicas
        self.wait_replicas_ms = wait_replicas_ms
        self.dead_max = dead_max
        self.dead_max_age_ms = int(dead_max_age_s * 1000)
        self.max_points = max_points  # admission bound in points; 0 = none
        self.wakeup = WakeUp()  # a local enqueue wakes an idle worker at once
        self.enqueue_calls = 0  # ENQUEUE round trips made (coalescing makes fewer)
        self.call_max_chunks = ENQUEUE_MAX_CHUNKS  # bounds of one ENQUEUE call
        self.call_max_bytes = ENQUEUE_MAX_BYTES
        self.largest_call = (0, 0)  # the most (chunks, payload bytes) one call carried
        # Per shard, requests waiting for its next shared call:
        # (chunk args, points, bytes, done).
        self._gathering: list[collections.deque[tuple[list[Any], int, int, asyncio.Future]]] = [
            collections.deque() for _ in self.shards]
        self._flusher: list[asyncio.Future | None] = [None for _ in self.shards]
        self.dead = DeadLetterQueue(client, self.wakeup, max_points=-(-max_points // shards),
                                    shards=self.shards)
        self._enqueue = client.register_script(scripts.ENQUEUE)
        self._claim = client.register_script(scripts.CLAIM)
        self._renew = client.register_script(scripts.RENEW)
        self._settle = client.register_script(scripts.SETTLE)
        self._release = client.register_script(scripts.RELEASE)
        self._reclaim = client.register_script(scripts.RECLAIM)
        self._pause = client.register_script(scripts.PAUSE)

    @property
    def shard_max_points(self) -> int:
        """Each shard's admission bound: its even part of ``max_points`` (all of it with
        one shard; 0 = none)."""
        return -(-self.max_points // len(self.shards))

    def with_client(self, client: aioredis.Redis) -> PointQueue:
        """The same queue through another client (the workers' reserved connections)."""
        twin = PointQueue(client, self.strategy, dead_max=self.dead_max,
                          dead_max_age_s=self.dead_max_age_ms / 1000,
                          max_points=self.max_points, call_wait_s=self.call_wait_s,
                          wait_replicas=self.wait_replicas,
                          wait_replicas_ms=self.wait_replicas_ms,
                          shards=len(self.shards))
        twin.call_max_chunks, twin.call_max_bytes = self.call_max_chunks, self.call_max_bytes
        twin.wakeup = twin.dead.wakeup = self.wakeup  # a local enqueue wakes idle workers
        return twin

    @translated
    async def enqueue(self, points: Sequence[Point]) -> None:
        """Put points in the queue, each in its competition's shard (``_enqueue_shard``
        per shard, concurrently).

        Partial acceptance reads as for a request of several calls: when a shard
        failed and another took its points, ``EnqueueInterrupted`` says the first
        ``accepted`` points (in the request's order) went in and the next
        ``unknown`` may have — conservatively, every point from the first one not
        surely in to the last one that may be.  When nothing went in, the error of
        the shard holding the first point is raised as it is.
        """
        if len(self.shards) == 1:  # one shard (the default): no split, no task per request
            await self._enqueue_shard(0, points)
            return
        groups = self._by_shard(points)
        outcomes = await asyncio.gather(*(self._outcome(shard, [points[i] for i in where])
                                          for shard, where in groups))
        status = [0] * len(points)  # 0 refused, 1 unknown, 2 accepted
        causes: dict[int, ServiceError] = {}  # first point of a failed group -> its cause
        for (_, where), outcome in zip(groups, outcomes):
            accepted = unknown = len(where)
            if isinstance(outcome, EnqueueInterrupted):
                accepted, unknown = outcome.accepted, outcome.accepted + outcome.unknown
            elif outcome is not None:
                accepted = unknown = 0
            for rank, index in enumerate(where):
                status[index] = 2 if rank < accepted else 1 if rank < unknown else 0
                if outcome is not None and rank >= accepted:
                    causes.setdefault(index, outcome.cause if isinstance(
                        outcome, EnqueueInterrupted) else outcome)
        first = next((index for index, state in enumerate(status) if state != 2), None)
        if first is None:
            return
        last = max((index for index, state in enumerate(status) if state), default=-1)
        if last < 0:  # nothing went in anywhere
            error = outcomes[next(n for n, (_, where) in enumerate(groups) if 0 in where)]
            assert isinstance(error, ServiceError)
            raise error
        cause = causes[first]
        if isinstance(cause, ReplicasShort):  # a short replica must not hide a failure
            # of another shard from Redis's breaker (which does not count a short one)
            cause = next((c for c in causes.values() if not isinstance(c, ReplicasShort)),
                         cause)
        raise EnqueueInterrupted(cause, accepted=first, unknown=max(0, last + 1 - first))

    def _by_shard(self, points: Sequence[Point]) -> list[tuple[int, list[int]]]:
        """(shard, positions of its points in the request) for each shard concerned."""
        count = len(self.shards)
        where: dict[int, list[int]] = {}
        for index, point in enumerate(points):
            where.setdefault(keys.shard_of(point[COMPETITION_ID], count), []).append(index)
        return sorted(where.items())

    async def _outcome(self, shard: int, points: Sequence[Point]) -> ServiceError | None:
        """``_enqueue_shard``'s domain error (None: every point went in)."""
        try:
            with translated_errors():
                await self._enqueue_shard(shard, points)
        except ServiceError as exc:
            return exc
        return None

    async def _enqueue_shard(self, shard: int, points: Sequence[Point]) -> None:
        """Put one shard's points in: chunked and grouped into calls as the strategy says.

        Each call is all-or-nothing and refused whole past ``shard_max_points``
        (``QueueFull``), and carries at most ``call_max_chunks`` chunks and
        ``call_max_bytes`` of payload (a chunk larger than that goes alone).  When
        a later call of a request fails, ``EnqueueInterrupted`` says how many of
        its points went in.  On a coalescing path a request that fits in one call
        is one group of the next shared call.
        """
        size = self.strategy.chunk_points
        pieces = [points[i:i + size] for i in range(0, len(points), size)]
        ids = new_chunk_ids([len(piece) for piece in pieces])
        chunk_args: list[Any] = []
        size = 0
        for index, (chunk_id, piece) in enumerate(zip(ids, pieces)):
            if index and len(piece) >= 500:  # encoding a big chunk is ~0.3 ms: let go
                await asyncio.sleep(0)
            payload = Chunk(chunk_id, list(piece)).payload()
            chunk_args += (chunk_id, payload)
            size += len(payload)
        if (self.strategy.coalesce and len(pieces) <= self.call_max_chunks
                and size <= self.call_max_bytes):
            await self._coalesced(shard, chunk_args, len(points), size)
            return
        accepted = 0
        for group in self._calls(chunk_args):
            count = sum(chunk_size(chunk_id) for chunk_id in group[::2])
            try:
                admitted, queued, bound = await self._call_enqueue(shard, [group])
            except ServiceError as exc:
                unknown = count if isinstance(exc, MAYBE_RAN) else 0
                if accepted == 0 and unknown == 0:
                    raise
                raise EnqueueInterrupted(exc, accepted=accepted, unknown=unknown) from exc
            if not admitted:
                full = queue_full(queued, bound)
                if accepted == 0:
                    raise full
                raise EnqueueInterrupted(full, accepted=accepted, unknown=0)
            accepted += count
            self.wakeup.set()

    def _calls(self, chunk_args: list[Any]) -> list[list[Any]]:
        """A request's (chunk id, payload) pairs cut into calls: at most the path's
        ``chunks_per_call`` (0: no bound of its own) and the calls' bounds."""
        most = min(self.strategy.chunks_per_call or self.call_max_chunks, self.call_max_chunks)
        calls: list[list[Any]] = []
        current: list[Any] = []
        size = 0
        for start in range(0, len(chunk_args), 2):
            payload = chunk_args[start + 1]
            if current and (len(current) // 2 >= most
                            or size + len(payload) > self.call_max_bytes):
                calls.append(current)
                current, size = [], 0
            current += chunk_args[start:start + 2]
            size += len(payload)
        if current:
            calls.append(current)
        return calls

    async def _call_enqueue(self, shard: int, groups: list[list[Any]]
                            ) -> tuple[int, int, int]:
        """One ENQUEUE call for ``groups``; (groups admitted, queued before, bound)."""
        args: list[Any] = [self.shard_max_points]
        chunks = size = 0
        for group in groups:
            args += (len(group) // 2, *group)
            chunks += len(group) // 2
            size += sum(len(payload) for payload in group[1::2])
        self.largest_call = (max(self.largest_call[0], chunks),
                             max(self.largest_call[1], size))
        self.enqueue_calls += 1
        try:
            async with asyncio.timeout(self.call_wait_s):
                with translated_errors():
                    at = self.shards[shard]
                    if self.wait_replicas:
                        admitted, queued, bound = await self._enqueue_replicated(at, args)
                    else:
                        admitted, queued, bound = await self._enqueue(
                            keys=[at.items, at.ready, at.stats], args=args)
        except TimeoutError:  # the call was cancelled in flight: it may have run
            raise CommitUnknown("redis", f"Redis did not answer an enqueue within "
                                f"{self.call_wait_s:g}s; it may or may not have run") from None
        return int(admitted), int(queued), int(bound)

    async def _enqueue_replicated(self, at: keys.ShardKeys, args: list[Any]
                                  ) -> tuple[int, int, int]:
        """ENQUEUE, then ``WAIT wait_replicas wait_replicas_ms`` on the same connection
        (WAIT counts the replicas that have this connection's writes).

        A 202 acknowledged by the master alone is lost if the master dies before
        replicating it and a replica is promoted.  So a call that fewer replicas
        confirm in time is ``ReplicasShort`` (a ``CommitUnknown``): its points are
        in Redis (and will be committed from there) and also go to PostgreSQL
        directly — the idempotent insert makes the second copy a no-op — so every
        202 is on a replica or in PostgreSQL.  One WAIT serves every request of a
        coalesced call.
        """
        async with self.redis.client() as conn:  # one connection for both commands
            admitted, queued, bound = await self._enqueue(
                keys=[at.items, at.ready, at.stats], args=args, client=conn)
            if not int(admitted):
                return admitted, queued, bound  # refused whole: nothing was written
            replicas = int(await conn.wait(self.wait_replicas, self.wait_replicas_ms))
        if replicas < self.wait_replicas:
            metrics.ENQUEUE_REPLICA_SHORT.inc()
            short = ReplicasShort(
                "redis", f"{replicas} of {self.wait_replicas} replica(s) confirmed an enqueue "
                f"within {self.wait_replicas_ms} ms (QUEUE_WAIT_REPLICAS); its points may be "
                "on the master alone")
            # What the script did: only the groups it admitted are on the master alone.
            short.reply = (int(admitted), int(queued), int(bound))
            raise short
        return admitted, queued, bound

    async def _coalesced(self, shard: int, group: list[Any], count: int, size: int) -> None:
        """Join the shard's next shared ENQUEUE call; return once this group is in Redis.

        Natural batching, as group commit does it: while one call is in flight,
        the groups of the requests that arrive meanwhile gather, and go together
        in the next call (as many as the call's bounds take; the rest in the call
        after).  No timer: an idle queue sends a lone group at once.
        """
        done = asyncio.get_running_loop().create_future()
        self._gathering[shard].append((group, count, size, done))
        flusher = self._flusher[shard]
        if flusher is None or flusher.done():
            # Its own context: the flush serves many requests, it logs as none of them.
            self._flusher[shard] = asyncio.get_running_loop().create_task(
                self._flush_gathered(shard), context=contextvars.Context())
        await done

    def _next_batch(self, shard: int) -> list[tuple[list[Any], int, int, asyncio.Future]]:
        """The shard's gathered groups the next call takes, in order, within its bounds."""
        batch: list[tuple[list[Any], int, int, asyncio.Future]] = []
        chunks = size = 0
        gathering = self._gathering[shard]
        while gathering:
            group, _, group_size, _ = gathering[0]
            if batch and (chunks + len(group) // 2 > self.call_max_chunks
                          or size + group_size > self.call_max_bytes):
                break
            batch.append(gathering.popleft())
            chunks += len(group) // 2
            size += group_size
        return batch

    async def _flush_gathered(self, shard: int) -> None:
        while self._gathering[shard]:
            batch = self._next_batch(shard)
            try:
                admitted, queued, bound = await self._call_enqueue(
                    shard, [g for g, _, _, _ in batch])
            except BaseException as exc:
                # Groups the script refused (the bound) were never written: queue_full,
                # even when the WAIT for the admitted ones fell short.
                reply = exc.reply if isinstance(exc, ReplicasShort) else None
                for index, (_, count, _, done) in enumerate(batch):
                    if done.done():
                        continue
                    if reply is not None and index >= reply[0]:
                        done.set_exception(queue_full(reply[1], reply[2]))
                    elif isinstance(exc, MAYBE_RAN):  # the call may have run
                        done.set_exception(EnqueueInterrupted(exc, accepted=0, unknown=count))
                    elif isinstance(exc, ServiceError):
                        done.set_exception(copy.copy(exc))
                    else:  # cancelled, or a bug, once the call was under way: it may have run
                        done.set_exception(EnqueueInterrupted(
                            StoreUnavailable("redis", "enqueue failed", reason=repr(exc)),
                            accepted=0, unknown=count))
                if not isinstance(exc, Exception):
                    raise
                continue
            for index, (_, _, _, done) in enumerate(batch):
                if not done.done():
                    if index < admitted:
                        done.set_result(None)
                    else:
                        done.set_exception(queue_full(queued, bound))
            self.wakeup.set()

    @translated
    async def claim(self, max_points: int, lease_s: float) -> Claim:
        """Lease up to ``max_points`` (at least one chunk) for ``lease_s`` seconds, from
        one shard: the first with work, trying them in turn from the one after the
        previous claim's first try (round-robin: a busy shard cannot starve another)."""
        token = uuid.uuid4().hex
        start = self._next_shard
        self._next_shard = (start + 1) % len(self.shards)
        for step in range(len(self.shards)):
            claim = await self._claim_from((start + step) % len(self.shards), token,
                                           max_points, lease_s)
            if claim:
                return claim
        return Claim(token, [])

    async def _claim_from(self, shard: int, token: str, max_points: int, lease_s: float
                          ) -> Claim:
        at = self.shards[shard]
        flat = await self._claim(
            keys=[at.items, at.ready, at.leases, at.stats, at.paused, at.holders,
                  at.handbacks],
            args=[int(lease_s * 1000), max_points, token],
        )
        raw = [(flat[i].decode(), flat[i + 1], flat[i + 2].decode())
               for i in range(0, len(flat), 4)]
        lost = {flat[i].decode(): int(flat[i + 3]) for i in range(0, len(flat), 4)
                if flat[i + 3] != b"0"}
        return Claim(token, raw, lost, shard)

    @translated
    async def renew(self, claim: Claim, lease_s: float) -> int:
        """Extend the claim's leases; return how many of its chunks are still held."""
        at = self.shards[claim.shard]
        return int(await self._renew(keys=[at.leases, at.holders],
                                     args=[claim.token, int(lease_s * 1000), *claim.ids]))

    @translated
    async def settle(self, claim: Claim, outcome: Settlement) -> bool:
        """Apply a settlement; False (nothing applied) when the claim was lost."""
        args: list[Any] = [claim.token, outcome.committed, len(outcome.acked), *outcome.acked,
                           len(outcome.retries)]
        for chunk, delay_ms in outcome.retries:
            args += (chunk.id, chunk.payload(), delay_ms)
        args.append(len(outcome.dead))
        for letter in outcome.dead:
            args += (letter.key, letter.entry())
        args += (self.dead_max, self.dead_max_age_ms)
        at = self.shards[claim.shard]  # its dead letters stay on its shard
        settled, dropped = await self._settle(
            keys=[at.items, at.leases, at.retry, at.stats, at.dead, at.dead_index,
                  at.holders, at.handbacks, at.committed_by_s], args=args)
        if settled:
            metrics.settled(sum(len(chunk.points) for chunk, _ in outcome.retries),
                            collections.Counter(letter.reason for letter in outcome.dead),
                            int(dropped))
        return bool(settled)

    @translated
    async def release(self, claim: Claim, *, error: str | None = None) -> int:
        """Hand the claim's chunks back to the front of the queue.

        Unspent (store outage, shutdown) when ``error`` is None; otherwise the
        handback is counted against each chunk, with the error.
        """
        if not claim:
            return 0
        at = self.shards[claim.shard]
        return int(await self._release(
            keys=[at.leases, at.ready, at.stats, at.holders, at.handbacks],
            args=[claim.token, "0" if error is None else "1", (error or "")[:300],
                  *claim.ids]))

    @translated
    async def reclaim(self) -> tuple[int, int]:
        """Return expired leases to the queue and due retries; (expired, due) chunk counts,
        summed over the shards (each moves at most ``RECLAIM_LIMIT`` of each a call)."""
        total_expired = total_due = 0
        for at in self.shards:
            expired, due = await self._reclaim(
                keys=[at.leases, at.retry, at.ready, at.stats, at.holders, at.handbacks],
                args=[RECLAIM_LIMIT],
            )
            if expired or due:
                self.wakeup.set()
            total_expired, total_due = total_expired + int(expired), total_due + int(due)
        return total_expired, total_due

    @translated
    async def pause(self) -> None:
        for at in self.shards:
            await self._pause(keys=[at.paused, at.holders])

    @translated
    async def resume(self) -> None:
        for at in self.shards:  # one key a call: each in its own slot
            await self.redis.delete(at.paused)
        self.wakeup.wake_all()

    @translated
    async def stats(self) -> dict[str, Any]:
        """Point counters (summed over the shards) plus the age of the oldest unclaimed
        chunk (of any shard); paused when any shard is."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for at in self.shards:
                pipe.hgetall(at.stats)
                pipe.lindex(at.ready, 0)
                pipe.exists(at.paused)
            replies = await pipe.execute()
        values: collections.Counter[str] = collections.Counter()
        oldest = 0.0
        paused = False
        for counters, head, shard_paused in zip(*[iter(replies)] * 3):
            values.update({k.decode(): int(v) for k, v in counters.items()})
            if head is not None:
                oldest = max(oldest, (_now_ms() - chunk_enqueued_ms(head.decode())) / 1000)
            paused = paused or bool(shard_paused)
        return {
            "depth": values.get("ready", 0),
            "inflight": values.get("inflight", 0),
            "retry_scheduled": values.get("retry", 0),
            "dead": values.get("dead", 0),
            "oldest_age_s": round(oldest, 3),
            "paused": bool(paused),
            "totals": {name: values.get(name, 0) for name in
                       ("enqueued", "committed", "retried", "reclaimed", "dead_lettered",
                        "dlq_dropped")},
        }

    @translated
    async def committed_rate(self, window_s: int = 10) -> float:
        """Points committed per second over the last ``window_s`` whole seconds (all
        processes), from the per-second counts SETTLE keeps."""
        seconds, _ = await self.redis.time()
        fields = [seconds - k for k in range(1, window_s + 1)]
        total = 0
        for at in self.shards:
            counts = await self.redis.hmget(at.committed_by_s, fields)
            total += sum(int(c) for c in counts if c is not None)
        return round(total / window_s, 1)
