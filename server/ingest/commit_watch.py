"""``?ack=committed``: every waiting request of this process served by one query per tick.

A request that asks for its points to be committed waits until each of them is
a row in PostgreSQL (whichever process's worker wrote it) — its key
(competition, id) stored *with its content* (participant, value, time).  A key
stored with other content is an id conflict: that point will never commit (the
worker dead-letters it as ``id_conflict``), so the waiter is answered at once
with ``IdConflict``.  Polling per
request would cost one query per waiter per tick: at a few hundred waiting
requests that is thousands of queries a second, each holding a pooled
connection the handlers and the next poll need.  Instead the waiting points of
all requests are gathered, and one poller task asks PostgreSQL for all of them
in one query per tick (``storage/points.py`` ``STORED_STATES``), crossing each
point found off every waiter that holds it; a waiter whose points are all found
is released at once.  The poller runs only while someone waits.

* **Tick.** ``TICK_S`` (10 ms) while commits are being found: what a committed
  ack adds to the commit itself, at most.  A tick that finds nothing doubles the
  wait, up to ``MAX_IDLE_S`` (100 ms), so ids that are slow to commit (a
  backlog, a retry, an id bound for the dead letters) are not asked a hundred
  times a second.  A query names at most ``MAX_IDS_PER_QUERY`` points; those it
  did not find go to the back, so a large or hopeless waiter cannot keep the
  others out of every query.
* **Failures.** PostgreSQL away or the pool busy only means "not committed yet":
  the poller backs off (up to ``MAX_BACKOFF_S``) and each waiter still gets its
  answer at its own timeout (``committed: false`` — queued, not lost).
* **Lifetime.** A waiter leaves at its answer or its timeout, whichever comes
  first (tornado does not cancel a handler whose client went away, so such a
  waiter stays until its timeout).  The poller runs in a context of its own, so
  its log lines carry no request's id.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
from collections.abc import Sequence

from server.errors import IdConflict, StoreUnavailable
from server.points import COMPETITION_ID, ID, Point
from server.storage import points as sql
from server.storage.database import Database

log = logging.getLogger(__name__)

TICK_S = 0.01
MAX_IDLE_S = 0.1
MAX_BACKOFF_S = 0.5
MAX_IDS_PER_QUERY = 10_000


class _Waiter:
    __slots__ = ("conflicts", "done", "indexes", "missing")

    def __init__(self, points: Sequence[Point], done: asyncio.Future[None]) -> None:
        self.indexes: dict[Point, list[int]] = {}  # point -> its indexes in the request
        for index, point in enumerate(points):
            self.indexes.setdefault(point, []).append(index)
        self.missing = set(self.indexes)
        self.conflicts: list[Point] = []
        self.done = done


class CommitWatch:
    """Waits for points to be committed; one poller, one query per tick, for all waiters."""

    def __init__(self, db: Database, *, tick_s: float = TICK_S) -> None:
        self.db = db
        self.tick_s = tick_s
        # A point (its whole tuple: key and content) -> the waiters holding it;
        # insertion order: longest waiting first.
        self._by_point: dict[Point, list[_Waiter]] = {}
        self._poller: asyncio.Task[None] | None = None
        self.queries = 0  # polls made (for tests and metrics)

    async def wait(self, points: Sequence[Point], timeout_s: float) -> bool:
        """True once every point is committed with its content; False if ``timeout_s``
        passes first.  ``IdConflict`` (naming them by index) as soon as any point's
        key is found stored with other content."""
        waiter = _Waiter(points, asyncio.get_running_loop().create_future())
        if not waiter.missing:
            return True
        for point in waiter.missing:
            self._by_point.setdefault(point, []).append(waiter)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(
                self._poll(), name="commit-watch", context=contextvars.Context())
        try:
            async with asyncio.timeout(timeout_s):
                await waiter.done
        except TimeoutError:
            return False
        finally:
            self._forget(waiter)
        if waiter.conflicts:
            raise IdConflict(sorted((index, point[ID], point[COMPETITION_ID])
                                    for point in waiter.conflicts
                                    for index in waiter.indexes[point]), queued=True)
        return True

    def _forget(self, waiter: _Waiter) -> None:
        for point in waiter.missing:
            waiters = self._by_point.get(point)
            if waiters is not None:
                waiters.remove(waiter)
                if not waiters:
                    del self._by_point[point]
        waiter.missing = set()

    async def _poll(self) -> None:
        delay = self.tick_s
        while self._by_point:
            await asyncio.sleep(delay)
            asked = list(itertools.islice(self._by_point, MAX_IDS_PER_QUERY))
            if not asked:
                break
            try:
                async with self.db.cursor() as cur:
                    found = await sql.stored_states(cur, asked)
            except StoreUnavailable:  # includes a busy pool: not committed yet
                delay = min(delay * 2, MAX_BACKOFF_S)
                continue
            except Exception:  # a bug: said once per failure, never a stuck waiter
                log.exception("polling for committed points failed")
                delay = MAX_BACKOFF_S
                continue
            self.queries += 1
            delay = self.tick_s if found else min(delay * 2, MAX_IDLE_S)
            for index, same in found:
                point = asked[index]
                for waiter in self._by_point.pop(point, ()):
                    waiter.missing.discard(point)
                    if not same:  # its key holds another point: it will never commit
                        waiter.conflicts.append(point)
                    if (not same or not waiter.missing) and not waiter.done.done():
                        waiter.done.set_result(None)
            if len(self._by_point) > len(asked):  # the unfound go to the back of the line
                for point in asked:
                    waiters = self._by_point.pop(point, None)
                    if waiters is not None:
                        self._by_point[point] = waiters

    async def close(self) -> None:
        """Stop polling (at shutdown, after the handlers have had their time)."""
        if self._poller is not None and not self._poller.done():
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
