"""Accepting points: into the Redis queue, or straight into PostgreSQL when Redis is down.

The handler validates; this module decides where validated points go:

* normally the queue (``accept`` returns once they are durable in Redis);
* when the queue is full (``QUEUE_MAX_POINTS``, or Redis at ``maxmemory``),
  ``QueueFull``: back-pressure, never a reason to bypass the queue;
* when Redis fails, the points are written to PostgreSQL at once with the
  same idempotent insert the workers use (degraded mode).  That write is
  all-or-nothing: if any point's competition or participant is unknown — which
  the queue would have retried — it raises ``UnknownReferences`` and nothing is
  written;
* when both stores fail, ``StoreUnavailable`` says that nothing was accepted.

A failure after part of a request went in (the naive path makes one call per
point; a call's reply can be lost after it ran) is never reported as "nothing
accepted": ``PartiallyAccepted`` carries the ids that were, and those that may
have been, so a client re-sending with the same ids doubles nothing.  The same
holds for a bug: once the enqueue has started, an unexpected error leaves every
id unknown (``PartiallyAccepted`` with the bug as its cause).

``wait_committed`` serves ``?ack=committed`` through ``commit_watch.py``: the ids
of every waiting request polled in one query per tick, which works whichever
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
    PartiallyAccepted,
    PoolTimeout,
    QueueFull,
    ServiceError,
    StoreUnavailable,
    UnknownReferences,
)
from server.ingest.commit_watch import CommitWatch
from server.points import ID, Point
from server.queue.redis_queue import PointQueue
from server.storage import points as sql
from server.storage.database import Database

log = logging.getLogger(__name__)


QUEUED, COMMITTED, MIXED = "queued", "committed", "mixed"  # where accepted points are

# What ``Ingest.accept`` raises when it certainly accepted nothing (a ``CommitUnknown``,
# though a ``StoreUnavailable``, is never one of them: it may have applied).
NOTHING_ACCEPTED: tuple[type[ServiceError], ...] = (QueueFull, StoreUnavailable,
                                                    UnknownReferences, DataRejected)


class Ingest:
    """Where validated points go; ``commits`` (the lifecycle owner's) serves waits."""

    def __init__(self, queue: PointQueue, db: Database, commits: CommitWatch) -> None:
        self.queue = queue
        self.db = db
        self.commits = commits
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
            await self.queue.enqueue(points)
        except (QueueFull, PoolTimeout):
            raise  # back-pressure, or this process busy: not reasons to bypass the queue
        except StoreUnavailable as exc:
            log.warning("%s; writing %d point(s) to PostgreSQL directly", exc, len(points))
            try:
                await self._write_directly(points)
            except CommitUnknown as direct:
                raise PartiallyAccepted(direct, accepted_ids=[], unknown_ids=ids) from direct
            except StoreUnavailable as direct:
                raise StoreUnavailable("postgres", f"{direct.message}; nothing was accepted",
                                       retry_after_s=direct.retry_after_s) from direct
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
                await self._write_directly(points[exc.accepted:])
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

    def _count(self, accepted: int, *, direct: int = 0) -> None:
        self.written_directly += direct
        metrics.points_accepted(accepted)

    async def _write_directly(self, points: Sequence[Point]) -> None:
        try:
            async with self.db.transaction() as cur:
                inserted, refused = await sql.write_points(cur, points, all_or_nothing=True)
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
                                   retry_after_s=2) from exc

    async def wait_committed(self, ids: Sequence[str], timeout_s: float) -> bool:
        """True once every id is committed in PostgreSQL; False if ``timeout_s`` passes."""
        return await self.commits.wait(ids, timeout_s)
