"""``?ack=committed``: every waiting request of this process served by one query per tick.

A request that asks for its points to be committed waits until all their ids
are rows in PostgreSQL (whichever process's worker wrote them).  Polling per
request would cost one query per waiter per tick: at a few hundred waiting
requests that is thousands of queries a second, each holding a pooled
connection the handlers and the next poll need.  Instead the waiting ids of
all requests are gathered, and one poller task asks PostgreSQL for all of them
in one query per tick (``SELECT id … WHERE id = ANY(…)``), crossing each found
id off every waiter that holds it; a waiter whose ids are all found is released
at once.  The poller runs only while someone waits.

* **Tick.** ``TICK_S`` (10 ms) while commits are being found: what a committed
  ack adds to the commit itself, at most.  A tick that finds nothing doubles the
  wait, up to ``MAX_IDLE_S`` (100 ms), so ids that are slow to commit (a
  backlog, a retry, an id bound for the dead letters) are not asked a hundred
  times a second.  A query names at most ``MAX_IDS_PER_QUERY`` ids; the ids it
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

from server.errors import StoreUnavailable
from server.storage import points as sql
from server.storage.database import Database

log = logging.getLogger(__name__)

TICK_S = 0.01
MAX_IDLE_S = 0.1
MAX_BACKOFF_S = 0.5
MAX_IDS_PER_QUERY = 10_000


class _Waiter:
    __slots__ = ("done", "missing")

    def __init__(self, ids: set[str], done: asyncio.Future[None]) -> None:
        self.missing = ids
        self.done = done


class CommitWatch:
    """Waits for ids to be committed; one poller, one query per tick, for all waiters."""

    def __init__(self, db: Database, *, tick_s: float = TICK_S) -> None:
        self.db = db
        self.tick_s = tick_s
        self._by_id: dict[str, list[_Waiter]] = {}  # insertion order: longest waiting first
        self._poller: asyncio.Task[None] | None = None
        self.queries = 0  # polls made (for tests and metrics)

    async def wait(self, ids: Sequence[str], timeout_s: float) -> bool:
        """True once every id is committed; False if ``timeout_s`` passes first."""
        waiter = _Waiter(set(ids), asyncio.get_running_loop().create_future())
        if not waiter.missing:
            return True
        for point_id in waiter.missing:
            self._by_id.setdefault(point_id, []).append(waiter)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(
                self._poll(), name="commit-watch", context=contextvars.Context())
        try:
            async with asyncio.timeout(timeout_s):
                await waiter.done
            return True
        except TimeoutError:
            return False
        finally:
            self._forget(waiter)

    def _forget(self, waiter: _Waiter) -> None:
        for point_id in waiter.missing:
            waiters = self._by_id.get(point_id)
            if waiters is not None:
                waiters.remove(waiter)
                if not waiters:
                    del self._by_id[point_id]
        waiter.missing = set()

    async def _poll(self) -> None:
        delay = self.tick_s
        while self._by_id:
            await asyncio.sleep(delay)
            asked = list(itertools.islice(self._by_id, MAX_IDS_PER_QUERY))
            if not asked:
                break
            try:
                async with self.db.cursor() as cur:
                    found = await sql.committed_ids(cur, asked)
            except StoreUnavailable:  # includes a busy pool: not committed yet
                delay = min(delay * 2, MAX_BACKOFF_S)
                continue
            except Exception:  # a bug: said once per failure, never a stuck waiter
                log.exception("polling for committed points failed")
                delay = MAX_BACKOFF_S
                continue
            self.queries += 1
            delay = self.tick_s if found else min(delay * 2, MAX_IDLE_S)
            for point_id in found:
                for waiter in self._by_id.pop(point_id, ()):
                    waiter.missing.discard(point_id)
                    if not waiter.missing and not waiter.done.done():
                        waiter.done.set_result(None)
            if len(self._by_id) > len(asked):  # the unfound go to the back of the line
                for point_id in asked:
                    waiters = self._by_id.pop(point_id, None)
                    if waiters is not None:
                        self._by_id[point_id] = waiters

    async def close(self) -> None:
        """Stop polling (at shutdown, after the handlers have had their time)."""
        if self._poller is not None and not self._poller.done():
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
