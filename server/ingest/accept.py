"""Accepting points: into the Redis queue, or straight into PostgreSQL when Redis is down.

The handler validates; this module decides where validated points go:

* normally the queue (``accept`` returns once they are durable in Redis);
* when the queue is full (``QUEUE_MAX_POINTS``, or Redis at ``maxmemory``),
  ``QueueFull``: back-pressure, never a reason to bypass the queue;
* when Redis fails — or its circuit breaker is open, or an ENQUEUE call goes
  unanswered for ``REQUEST_STORE_WAIT_S`` (a black-holed link) — the points
  are written to PostgreSQL at once with the
  same idempotent insert the workers use (degraded mode).  That write is
  all-or-nothing: if any point's competition or participant is unknown — which
  the queue would have retried — it raises ``UnknownReferences`` and nothing is
  written; if any point's id is taken in its competition by a point of other
  content, it raises ``IdConflict`` and nothing is written;
* when both stores fail, ``StoreUnavailable`` says that nothing was accepted —
  within a few ``REQUEST_STORE_WAIT_S`` of PostgreSQL going silent too: the
  direct write waits no longer than that for a connection, for each of at most
  two pings of an idle one, and for its ``BEGIN`` (a silent link then costs a
  request seconds, not the 30 s statement bound, and nothing was sent that
  could commit), while its insert, which a large batch may make slow, keeps the
  statement bound.

A failure after part of a request went in (the naive path makes one call per
point; a call's reply can be lost after it ran) is never reported as "nothing
accepted": ``PartiallyAccepted`` carries the ids that were, and those that may
have been, so a client re-sending with the same ids doubles nothing.  The same
holds for a bug: once the enqueue has started, an unexpected error leaves every
id unknown (``PartiallyAccepted`` with the bug as its cause).

``wait_committed`` serves ``?ack=committed`` through ``commit_watch.py``: the points
of every waiting request polled in one query per tick (by key and content: a
point whose id is taken by other content answers ``IdConflict`` at once), which works whichever
process's worker commits them; a store error while waiting only means "not
committed yet".
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from server import metrics
from server.errors import (
    CommitUnknown,
    DataRejected,
    EnqueueInterrupted,
    IdConflict,
    PartiallyAccepted,
    PoolTimeout,
    QueueFull,
    ServiceError,
    StoreUnavailable,
    UnknownReferences,
)
from server.ingest.commit_watch import CommitWatch
from server.points import COMPETITION_ID, ID, Point
from server.queue.breaker import CircuitBreaker
from server.queue.redis_queue import PointQueue
from server.storage import points as sql
from server.storage.database import Database

log = logging.getLogger(__name__)


QUEUED, COMMITTED, MIXED = "queued", "committed", "mixed"  # where accepted points are

# What ``Ingest.accept`` raises when it certainly accepted nothing (a ``CommitUnknown``,
# though a ``StoreUnavailable``, is never one of them: it may have applied).
# An ``IdConflict`` is one: a direct write that finds one rolls the whole request back.
NOTHING_ACCEPTED: tuple[type[ServiceError], ...] = (QueueFull, StoreUnavailable,
                                                    UnknownReferences, DataRejected,
                                                    IdConflict)


class Ingest:
    """Where validated points go; ``commits`` (the lifecycle owner's) serves waits."""

    def __init__(self, queue: PointQueue, db: Database, commits: CommitWatch, *,
                 breaker: CircuitBreaker | None = None, wait_s: float | None = None) -> None:
        self.queue = queue
        self.db = db
        # REQUEST_STORE_WAIT_S: how long a direct write may wait for a connection and
        # its BEGIN before PostgreSQL is taken for gone too (None: the pool's bounds).
        # Not its insert: a large batch may be slow, not silent.
        self.wait_s = wait_s
        self.commits = commits
        self.breaker = breaker  # Redis's; None: never consulted
        self.written_directly = 0  # points this process wrote while Redis was down

    async def accept(self, points: Sequence[Point]) -> str:
        """Take every one of ``points`` or say exactly what was taken.

        Returns where they went: ``QUEUED`` (durable in Redis), ``COMMITTED``
        (written to PostgreSQL directly: Redis was down), or ``MIXED`` (Redis failed
        part-way; the rest was written directly).  Raises one of ``NOTHING_ACCEPTED``
        when nothing was accepted, and ``PartiallyAccepted`` (with the ids accepted,
        and those that may have been) otherwise — for a bug too: an unexpected error
        once the enqueue has started is ``PartiallyAccepted`` with every id unknown
        and the bug as its ``cause``, never "nothing was accepted".
        """
        try:
            return await self._accept(points)
        except PartiallyAccepted:
            raise
        except CommitUnknown as exc:  # a StoreUnavailable that may have applied
            raise PartiallyAccepted(exc, accepted_ids=[],
                                    unknown_ids=[p[ID] for p in points]) from exc
        except NOTHING_ACCEPTED:
            raise
        except Exception as exc:  # a bug: whatever had been sent may be in Redis
            raise PartiallyAccepted(exc, accepted_ids=[],
                                    unknown_ids=[p[ID] for p in points]) from exc

    async def _accept(self, points: Sequence[Point]) -> str:
        ids = [p[ID] for p in points]
        try:
            await self._enqueue(points)
        except (QueueFull, PoolTimeout):
            raise  # back-pressure, or this process busy: not reasons to bypass the queue
        except StoreUnavailable as exc:
            log.warning("%s; writing %d point(s) to PostgreSQL directly", exc, len(points))
            try:
                await self._write_directly(points)
            except CommitUnknown as direct:
                raise PartiallyAccepted(direct, accepted_ids=[], unknown_ids=ids) from direct
            except IdConflict as direct:
                if isinstance(exc, CommitUnknown):  # the enqueue may have landed: then
                    # the request's other points are queued, and commit
                    raise PartiallyAccepted(direct, accepted_ids=[], unknown_ids=ids,
                                            message=direct.message) from direct
                raise
            except StoreUnavailable as direct:
                raise StoreUnavailable("postgres", f"{direct.message}; nothing was accepted",
                                       retry_after_s=direct.retry_after_s,
                                       reason=direct.reason) from direct
            self._count(len(points), direct=len(points))
            return COMMITTED
        except EnqueueInterrupted as exc:
            accepted, unknown = ids[:exc.accepted], ids[exc.accepted:exc.accepted + exc.unknown]
            if isinstance(exc.cause, QueueFull):
                raise PartiallyAccepted(exc.cause, accepted_ids=accepted,
                                        unknown_ids=unknown) from exc
            # Redis failed part-way.  The rest — the points whose call may have
            # landed too — go to PostgreSQL directly: same ids, idempotent insert.
            log.warning("%s after %d point(s); writing the other %d to PostgreSQL directly",
                        exc.cause, exc.accepted, len(points) - exc.accepted)
            try:
                await self._write_directly(points[exc.accepted:], first=exc.accepted)
            except CommitUnknown as direct:  # the rest may be in PostgreSQL too
                raise PartiallyAccepted(direct, accepted_ids=accepted,
                                        unknown_ids=ids[exc.accepted:]) from direct
            except ServiceError as direct:
                raise PartiallyAccepted(direct, accepted_ids=accepted,
                                        unknown_ids=unknown) from direct
            self._count(len(points), direct=len(points) - exc.accepted)
            # All of them are in PostgreSQL when none was surely queued (a copy that
            # did land in Redis too will insert nothing).
            return MIXED if exc.accepted else COMMITTED
        self._count(len(points))
        return QUEUED

    async def _enqueue(self, points: Sequence[Point]) -> None:
        """``queue.enqueue`` as Redis's circuit breaker allows.

        While the breaker is open the points are refused at once with
        ``StoreUnavailable`` — so they go to PostgreSQL directly without waiting
        for a Redis that is failing; when it is half-open this request is its
        probe.  A Redis failure opens it (a busy pool, back-pressure, a command
        Redis refused or an enqueue too few replicas confirmed do not: Redis answers).
        """
        breaker = self.breaker
        if breaker is None:
            await self.queue.enqueue(points)
            return
        gate = breaker.try_pass()
        if gate is False:
            raise breaker.refused()
        try:
            await self.queue.enqueue(points)
        except EnqueueInterrupted as exc:  # judged by what interrupted it
            breaker.tell(gate, exc.cause)
            raise
        except BaseException as exc:
            breaker.tell(gate, exc)
            raise
        breaker.tell(gate)

    def _count(self, accepted: int, *, direct: int = 0) -> None:
        self.written_directly += direct
        metrics.points_accepted(accepted)

    async def _write_directly(self, points: Sequence[Point], *, first: int = 0) -> None:
        """Write ``points`` — the request's from index ``first`` on — in one
        transaction, all or nothing."""
        try:
            async with self.db.transaction(wait_s=self.wait_s) as cur:
                inserted, refused = await sql.write_points(cur, points, all_or_nothing=True)
                conflicts = [(first + r.position, points[r.position][ID],
                              points[r.position][COMPETITION_ID])
                             for r in refused if r.reason == "id_conflict"]
                if conflicts:  # raised in the transaction: it rolls back, nothing written
                    raise IdConflict(conflicts, queued=False)
                if refused:
                    raise UnknownReferences(
                        f"the queue is unavailable and {refused[0].message}, so these points "
                        "were not written (the queue would retry them; a direct write "
                        "cannot): retry when the queue is back")
            metrics.points_written_directly(inserted)  # committed: the block is left
        except CommitUnknown:
            raise
        except StoreUnavailable as exc:
            raise StoreUnavailable("postgres", "both Redis and PostgreSQL are unavailable",
                                   retry_after_s=2, reason=str(exc)) from exc

    async def wait_committed(self, points: Sequence[Point], timeout_s: float) -> bool:
        """True once every point is committed in PostgreSQL (its key, with its content);
        False if ``timeout_s`` passes.  A point whose id is taken by other content
        raises ``PartiallyAccepted`` of an ``IdConflict``: the others were accepted."""
        try:
            return await self.commits.wait(points, timeout_s)
        except IdConflict as exc:
            taken = {index for index, _, _ in exc.conflicts}
            accepted = [p[ID] for index, p in enumerate(points) if index not in taken]
            raise PartiallyAccepted(exc, accepted_ids=accepted, unknown_ids=[],
                                    message=exc.message) from exc
