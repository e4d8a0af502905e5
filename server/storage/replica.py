"""Where reads go: a PostgreSQL read replica (``DATABASE_READ_URL``) while it answers
and is no further behind than ``DATABASE_READ_MAX_LAG_S``, else the primary.

Only the read endpoints' queries come here (``ReadReplica.run``): leaderboards,
stats, participants, points and competitions.  Writes, token lookups, the
commit watch and the workers hold the primary's ``Database`` and nothing else,
so they cannot reach the replica; its connections are also opened with
``default_transaction_read_only`` (a DATABASE_READ_URL that points at a
primary by mistake still refuses writes).

**Lag, measured cheaply and honestly.**  Every ``CHECK_INTERVAL_S`` a supervised
task (``monitor``) reads the primary's ``pg_current_wal_lsn()`` and then asks the
replica, in one statement, whether it has replayed that far and how old the
last transaction it replayed is.  Two upper bounds on how stale the replica's
data can be follow, and the lag is the smaller:

* the time since a check last found it caught up (it had replayed everything
  the primary had written when that check read the primary's position);
* ``now() - pg_last_xact_replay_timestamp()``.

So an idle primary is not mistaken for lag (the replay timestamp alone grows
while nothing is written: here the replica is caught up and its lag is 0), and
a replica that stopped replaying or streaming shows its lag growing from the
moment the primary moved past it.  A lag cannot be understated; it may be
overstated by up to one check interval.  Neither bound exists when no check
has ever seen the replica caught up and it has replayed nothing since it
started: the lag is unknown, and reads go to the primary.

Reads follow the last check, never wait for one: the replica serves while it
answered that check, its lag is within the bound, and the check is recent (a
monitor that stopped checking sends reads to the primary).  A read the replica
fails (down since the last check, a statement cancelled by replay) is run again
on the primary, and the replica is left out until a check finds it well again.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from server.errors import PoolTimeout, StoreUnavailable
from server.metrics import read_served
from server.storage.database import Database
from server.supervisor import StopSignal

log = logging.getLogger(__name__)

T = TypeVar("T")

CHECK_INTERVAL_S = 0.5
CHECK_TIMEOUT_S = 1.0
# A check older than this (the monitor stopped, or every check hangs) is no check.
STALE_CHECK_S = 3 * CHECK_INTERVAL_S + 2 * CHECK_TIMEOUT_S

# On the replica, one round trip: is it a standby, has it replayed the primary's
# position, how old is the last transaction it replayed.
_REPLICA_STATE = """
SELECT pg_is_in_recovery(),
       coalesce(pg_last_wal_replay_lsn() >= %(lsn)s::pg_lsn, false),
       extract(epoch FROM now() - pg_last_xact_replay_timestamp())
"""


class ReadReplica:
    """Routes the read endpoints' queries; with no replica, everything to the primary."""

    def __init__(self, primary: Database, replica: Database | None, *,
                 max_lag_s: float) -> None:
        self.primary = primary
        self.replica = replica
        self.max_lag_s = max_lag_s
        self.check_interval_s = CHECK_INTERVAL_S
        self.lag_s: float | None = None  # None: unknown (never measured, or unmeasurable)
        self.up = False  # the replica answered the last check
        self.error: str | None = None  # why the last check or read failed
        self.checked_at: float | None = None  # monotonic time of the last check
        self._caught_up_at: float | None = None  # primary read time of the last caught-up check

    @property
    def configured(self) -> bool:
        return self.replica is not None

    def serving(self) -> bool:
        """Whether reads go to the replica now (from the last check; no I/O)."""
        return (self.replica is not None and self.up and self.lag_s is not None
                and self.lag_s <= self.max_lag_s and self.checked_at is not None
                and time.monotonic() - self.checked_at < STALE_CHECK_S)

    async def run(self, query: Callable[[Any], Awaitable[T]]) -> T:
        """``query(cursor)`` on the replica when it serves, else (or when it fails) on
        the primary.  ``query`` only reads: it may run twice."""
        if self.replica is not None and self.serving():
            try:
                async with self.replica.cursor() as cur:
                    result = await query(cur)
                read_served("replica")
                return result
            except PoolTimeout:
                raise  # a local wait (every replica connection busy), not the replica's fault
            except StoreUnavailable as exc:
                self.up = False
                self.error = str(exc)
                log.warning("read replica failed a read, reading from the primary: %s",
                            self.error)
        async with self.primary.cursor() as cur:
            result = await query(cur)
        read_served("primary")
        return result

    async def check(self) -> None:
        """Measure the replica's lag once (bounded by ``CHECK_TIMEOUT_S`` a store)."""
        assert self.replica is not None
        lsn: str | None = None
        asked_primary_at = time.monotonic()
        try:
            async with self.primary.cursor() as cur:
                await asyncio.wait_for(cur.execute("SELECT pg_current_wal_lsn()::text"),
                                       CHECK_TIMEOUT_S)
                (lsn,) = await cur.fetchone()
        except (StoreUnavailable, TimeoutError):
            pass  # only the replay timestamp bounds the lag this time
        try:
            async with self.replica.cursor() as cur:
                await asyncio.wait_for(cur.execute(_REPLICA_STATE, {"lsn": lsn}),
                                       CHECK_TIMEOUT_S)
                standby, caught_up, replay_age_s = await cur.fetchone()
        except (StoreUnavailable, TimeoutError) as exc:
            self.up, self.lag_s = False, None
            self.error = (str(exc) if isinstance(exc, StoreUnavailable)
                          else f"no answer within {CHECK_TIMEOUT_S:g}s")
            self.checked_at = time.monotonic()
            return
        now = time.monotonic()
        if not standby or (lsn is not None and caught_up):
            self._caught_up_at = asked_primary_at  # not a standby: it has its own writes
        bounds = [now - self._caught_up_at] if self._caught_up_at is not None else []
        if replay_age_s is not None:
            bounds.append(max(0.0, float(replay_age_s)))
        self.lag_s = min(bounds) if bounds else None
        self.up, self.error, self.checked_at = True, None, now

    async def monitor(self, stop: StopSignal) -> None:
        """``check`` every ``check_interval_s`` until ``stop`` (a supervised task)."""
        while not stop.requested:
            await self.check()
            await stop.pause(self.check_interval_s)

    def as_dict(self) -> dict[str, Any]:
        """The replica as an admin's ``/ready`` shows it."""
        detail: dict[str, Any] = {
            "ok": self.serving(), "up": self.up, "serving_reads": self.serving(),
            "lag_s": None if self.lag_s is None else round(self.lag_s, 3),
            "max_lag_s": self.max_lag_s}
        if self.error is not None:
            detail["error"] = self.error[:200]
        elif self.lag_s is None:
            detail["error"] = "lag unknown: the replica has not yet been seen caught up"
        elif not self.serving():
            detail["error"] = (f"{self.lag_s:.1f}s behind the primary (more than "
                               f"DATABASE_READ_MAX_LAG_S={self.max_lag_s:g}): reads go "
                               "to the primary")
        return detail

    def lag_for_metrics(self) -> float:
        return math.nan if self.lag_s is None else self.lag_s
