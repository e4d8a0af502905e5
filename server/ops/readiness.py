"""``/ready``'s answer: bounded store probes, run at most once a second however many ask.

``ready`` when both stores answer and no background task is down; ``saturated``
(200) when the queue holds ``QUEUE_MAX_POINTS`` (ingest answers 503
``queue_full`` until workers drain it; reads work); ``degraded`` when one store
answers (ingest still works: Redis down means direct writes, PostgreSQL down
means queueing) or a background task is being restarted; and ``unavailable``
(503) when neither store answers or the process is draining.
``checks.redis.durability`` says what a 202 is worth on this Redis.  With
``DATABASE_READ_URL``, ``checks.replica`` shows the read replica's lag from its
last check (``storage/replica.py``, no probe of its own) and whether it serves
reads; a replica down or too far behind makes an otherwise ready process
``degraded`` (reads still answer, from the primary).

What anyone may see is the status and the names of the checks that failed
(``public``): enough for a load balancer or an orchestrator.  The checks
themselves (driver errors with the stores' hosts and ports, pool sizes,
durability settings) tell an attacker where the stores are and how they fail,
so only an admin token sees them.  Both views come from the one cached answer.

``ServingState`` is what the lifecycle owner writes and ``/health``, ``/ready``
and the shutdown read: whether this process is draining, and how many requests
are between ``prepare`` and ``on_finish``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from server.ops.refreshed import Refreshed
from server.queue.durability import read_durability
from server.queue.redis_queue import PointQueue
from server.queue.worker import Workers
from server.storage.database import Database
from server.storage.replica import ReadReplica
from server.supervisor import Supervisor

PROBE_TIMEOUT_S = 1.0
READY_CACHE_S = 1.0


@dataclass
class ServingState:
    """Read by /health, /ready and the handlers; written by the lifecycle owner."""

    draining: bool = False
    inflight: int = 0  # requests between prepare() and on_finish()
    body_bytes: int = 0  # bytes request bodies hold now (HTTP_BODIES_MAX_BYTES bounds it)


async def _timed(probe: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    start = time.perf_counter()
    detail: dict[str, Any] | None = None
    try:
        detail = await asyncio.wait_for(probe, PROBE_TIMEOUT_S)
        ok, error = True, None
    except TimeoutError:
        ok, error = False, f"no answer within {PROBE_TIMEOUT_S:g}s"
    except Exception as exc:  # a probe boundary: any failure means "not ok"
        ok, error = False, f"{type(exc).__name__}: {exc}".strip()[:200]
    result: dict[str, Any] = {"ok": ok,
                              "latency_ms": round((time.perf_counter() - start) * 1000, 2)}
    if error:
        result["error"] = error
    if detail:
        result.update(detail)
    return result


class ReadinessProbe:
    """Runs the store probes at most once per READY_CACHE_S, however many ask."""

    def __init__(self, *, db: Database, redis: aioredis.Redis, queue: PointQueue,
                 workers: Workers, supervisor: Supervisor, state: ServingState,
                 max_points: int, durability_vouched: bool = False,
                 reads: ReadReplica | None = None) -> None:
        self.db = db
        self.reads = reads
        self.redis = redis
        self.queue = queue
        self.workers = workers
        self.supervisor = supervisor
        self.state = state
        self.max_points = max_points
        self.durability_vouched = durability_vouched  # REDIS_DURABILITY_VOUCHED
        self.cache_s = READY_CACHE_S
        self._answer = Refreshed(self._probe)

    async def check(self) -> tuple[int, dict[str, Any]]:
        return await self._answer.get(self.cache_s)

    async def _postgres(self) -> dict[str, Any]:
        async with self.db.cursor() as cur:
            await cur.execute("SELECT 1")
        return {"pool": self.db.pool_stats()}

    async def _redis(self) -> dict[str, Any]:
        await self.redis.ping()
        durability = await read_durability(self.redis, vouched=self.durability_vouched)
        return {"durability": durability.as_dict()}

    async def _queue(self) -> dict[str, Any]:
        stats = await self.queue.stats()
        queued = stats["depth"] + stats["inflight"] + stats["retry_scheduled"]
        return {"depth": stats["depth"], "oldest_age_s": stats["oldest_age_s"],
                "queued": queued, "max_points": self.max_points,
                "saturated": queued >= self.max_points}

    async def _probe(self) -> tuple[int, dict[str, Any]]:
        pg, rd, qu = await asyncio.gather(_timed(self._postgres()), _timed(self._redis()),
                                          _timed(self._queue()))
        workers, supervisor = self.workers, self.supervisor
        pg["circuit"] = workers.postgres_breaker.state
        rd["circuit"] = workers.redis_breaker.state
        tasks = workers.describe()
        checks = {"postgres": pg, "redis": rd, "queue": qu,
                  "workers": {"ok": supervisor.ok, "path": workers.strategy.name,
                              "running": sum(1 for t in tasks if t["running"]),
                              "down": [t["name"] for t in tasks if t["down_s"] is not None],
                              "restarts": supervisor.restarts_total,
                              **workers.stats.as_dict(),
                              "breakers": {"postgres": workers.postgres_breaker.as_dict(),
                                           "redis": workers.redis_breaker.as_dict()}}}
        replica_ok = True
        if self.reads is not None and self.reads.configured:
            checks["replica"] = self.reads.as_dict()
            replica_ok = checks["replica"]["ok"]
        if self.state.draining:
            status = "unavailable"
        elif pg["ok"] and rd["ok"] and supervisor.ok and replica_ok:
            status = "saturated" if qu.get("saturated") else "ready"
        elif pg["ok"] or rd["ok"]:
            status = "degraded"
        else:
            status = "unavailable"
        failed = [name for name, check in checks.items() if not check["ok"]]
        return (503 if status == "unavailable" else 200), {"status": status, "failed": failed,
                                                            "checks": checks}


def public(answer: dict[str, Any]) -> dict[str, Any]:
    """What anyone may read of ``/ready``'s answer: its status, the failed checks' names."""
    return {"status": answer["status"], "failed": answer["failed"]}
