"""The dashboard's one summary: every widget's figures in one answer, built once a second.

The page (``GET /dashboard``) polls ``GET /v1/dashboard/summary`` every ~1.5 s
while it is visible.  However many pages poll, each process builds the summary
at most once per ``SUMMARY_CACHE_S`` (``Refreshed``): the queue's counters (one
pipelined read over the shards, then the per-second commits and Redis's clock),
one query for the competitions, ``/ready``'s own cached probes for the stores,
this process's pools as ``/metrics`` samples them, and the benchmark runs read
off the loop (in a thread) at most every ``RUNS_CACHE_S``.  So a wall of open
dashboards costs the stores what one does.

A part that cannot be read now (a store is down) is ``null`` and named in
``unavailable``; the rest still answers, which is when an operator needs the
page most.  ``accepted/s`` and ``committed/s`` are not computed here: the page
derives them from the monotonic totals (all processes, from Redis) between two
summaries over the change in ``totals_at`` — Redis's clock when the totals
were read, so neither a slow build nor two hosts' clocks bend a rate — and any
process may answer any tick.

What a viewer may see depends on its role: error texts (``error``,
``last_error``) can name store hosts and ports, as ``/ready``'s details can, so
only an admin sees them (``for_role``).  The rest of the stores' state (pool
sizes, breakers, durability settings) is shown to every token: ``/ready`` keeps
it from the anonymous, but a dashboard viewer holds a token the operator gave
out, and "is a 202 fsynced?" is what a read-only wall display is for.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from server.ops.bench_runs import RunIndex
from server.ops.exporter import Sampler
from server.ops.loop_monitor import LoopMonitor
from server.ops.readiness import ReadinessProbe
from server.ops.refreshed import Refreshed
from server.queue.redis_queue import PointQueue
from server.queue.worker import Workers
from server.storage import catalog
from server.storage.replica import ReadReplica

log = logging.getLogger(__name__)

SUMMARY_CACHE_S = 1.0
RUNS_CACHE_S = 10.0
PART_TIMEOUT_S = 1.0  # a store that does not answer in this long is shown as down
COMPETITIONS_MAX = 100
_PRIVATE = frozenset({"error", "last_error"})  # texts that may name a store's address


class DashboardSummary:
    def __init__(self, *, readiness: ReadinessProbe, queue: PointQueue, workers: Workers,
                 reads: ReadReplica, loop_monitor: LoopMonitor, sampler: Sampler,
                 results_dir: Path, path: str) -> None:
        self.readiness = readiness
        self.queue = queue
        self.workers = workers
        self.sampler = sampler
        self.reads = reads
        self.loop_monitor = loop_monitor
        self.path = path  # this process's ingest path
        self.runs = RunIndex(results_dir)
        self._summary = Refreshed(self._build)
        self._runs = Refreshed(self._list_runs)

    async def get(self) -> dict[str, Any]:
        """The summary, at most ``SUMMARY_CACHE_S`` old (shared: do not change it)."""
        return await self._summary.get(SUMMARY_CACHE_S)

    async def _build(self) -> dict[str, Any]:
        as_of = datetime.now(UTC)
        (_, ready), queue, competitions, runs = await asyncio.gather(
            self.readiness.check(), _part(self._queue()), _part(self._competitions()),
            self._runs.get(RUNS_CACHE_S))
        checks = ready["checks"]
        tasks = self.workers.describe()
        return {
            "as_of": as_of.isoformat().replace("+00:00", "Z"),
            "status": ready["status"],
            "unavailable": [name for name, part in (("queue", queue),
                                                    ("competitions", competitions))
                            if part is None],
            "queue": queue,
            "workers": {"tasks": tasks,
                        "restarts": sum(task["restarts"] for task in tasks),
                        "breakers": {"postgres": self.workers.postgres_breaker.as_dict(),
                                     "redis": self.workers.redis_breaker.as_dict()},
                        "counters": self.workers.stats.as_dict()},
            "stores": {name: dict(checks[name]) for name in ("postgres", "redis", "replica")
                       if name in checks},
            "pools": [{"store": store, "pool": pool, "in_use": in_use, "idle": idle,
                       "waiting": waiting}
                      for store, pool, in_use, idle, waiting in self.sampler.pools()],
            "loop": self.loop_monitor.describe(),
            "competitions": competitions,
            "runs": runs,
        }

    async def _queue(self) -> dict[str, Any]:
        stats = await self.queue.stats()
        seconds, micros = await self.queue.redis.time()
        stats["totals_at"] = seconds + micros / 1e6
        stats["committed_per_s_10s"] = await self.queue.committed_rate()
        stats["path"] = self.path
        return stats

    async def _competitions(self) -> list[dict[str, Any]]:
        return await self.reads.run(
            lambda cur: catalog.recent_competitions(cur, COMPETITIONS_MAX))

    async def _list_runs(self) -> list[dict[str, Any]]:
        try:
            return await asyncio.to_thread(self.runs.list_runs)
        except OSError as exc:  # an unreadable results folder is no reason to fail the page
            log.warning("results: cannot list %s: %s", self.runs.root, exc)
            return []


async def _part(read: Any) -> Any:
    """A part of the summary, or None when its store does not answer in time."""
    try:
        return await asyncio.wait_for(read, PART_TIMEOUT_S)
    except Exception as exc:  # a boundary: a store down is a state to show, not an error
        log.debug("dashboard: a part is unavailable: %s", exc)
        return None


def for_role(summary: dict[str, Any], role: str) -> dict[str, Any]:
    """What ``role`` may see of the summary: all of it for an admin; without the error
    texts for the others."""
    shown = _without_private(summary) if role != "admin" else dict(summary)
    shown["viewer"] = {"role": role}
    return shown


def _without_private(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _without_private(item) for key, item in value.items()
                if key not in _PRIVATE}
    if isinstance(value, list):
        return [_without_private(item) for item in value]
    return value
