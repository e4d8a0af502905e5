"""/health (liveness, no I/O) and /ready (bounded store probes, cached, shared by callers).

``/ready`` says ``ready`` when both stores answer and no background task is
down; ``saturated`` (200) when the queue holds ``QUEUE_MAX_POINTS`` (ingest
answers 503 ``queue_full`` until workers drain it; reads work); ``degraded``
when one store answers (ingest still works: Redis down means direct writes,
PostgreSQL down means queueing) or a background task is being restarted; and
``unavailable`` (503) when neither store answers or the process is draining.
``checks.redis.durability`` says what a 202 is worth on this Redis.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from server.handlers.base import BaseHandler
from server.ops.refreshed import Refreshed
from server.queue.durability import read_durability

PROBE_TIMEOUT_S = 1.0
READY_CACHE_S = 1.0


class HealthHandler(BaseHandler):
    def get(self) -> None:
        if self.deps.lifecycle.draining:
            self.write_json({"status": "draining"}, 503)
        else:
            self.write_json({"status": "ok"})


async def _timed(probe: Any) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        detail = await asyncio.wait_for(probe, PROBE_TIMEOUT_S)
        ok, error = True, None
    except TimeoutError:
        detail, ok, error = None, False, f"no answer within {PROBE_TIMEOUT_S:g}s"
    except Exception as exc:  # a probe boundary: any failure means "not ok"
        detail, ok, error = None, False, f"{type(exc).__name__}: {exc}".strip()[:200]
    result: dict[str, Any] = {"ok": ok,
                              "latency_ms": round((time.perf_counter() - start) * 1000, 2)}
    if error:
        result["error"] = error
    if isinstance(detail, dict):
        result.update(detail)
    return result


class ReadinessProbe:
    """Runs the store probes at most once per READY_CACHE_S, however many ask."""

    def __init__(self, deps: Any) -> None:
        self.deps = deps
        self._answer = Refreshed(self._probe)

    async def check(self) -> tuple[int, dict[str, Any]]:
        return await self._answer.get(READY_CACHE_S)

    async def _probe(self) -> tuple[int, dict[str, Any]]:
        deps = self.deps

        async def postgres() -> dict[str, Any]:
            async with deps.db.cursor() as cur:
                await cur.execute("SELECT 1")
            return {"pool": deps.db.pool_stats()}

        async def redis() -> dict[str, Any]:
            await deps.redis.ping()
            return {"durability": (await read_durability(deps.redis)).as_dict()}

        async def queue() -> dict[str, Any]:
            stats = await deps.queue.stats()
            queued = stats["depth"] + stats["inflight"] + stats["retry_scheduled"]
            bound = deps.settings.queue_max_points
            return {"depth": stats["depth"], "oldest_age_s": stats["oldest_age_s"],
                    "queued": queued, "max_points": bound, "saturated": queued >= bound}

        pg, rd, qu = await asyncio.gather(_timed(postgres()), _timed(redis()), _timed(queue()))
        workers = deps.workers
        pg["circuit"] = workers.postgres_breaker.state
        rd["circuit"] = workers.redis_breaker.state
        supervisor = workers.supervisor
        tasks = workers.describe()
        checks = {"postgres": pg, "redis": rd, "queue": qu,
                  "workers": {"ok": supervisor.ok, "path": deps.path.name,
                              "running": sum(1 for t in tasks if t["running"]),
                              "down": [t["name"] for t in tasks if t["down_s"] is not None],
                              "restarts": supervisor.restarts_total,
                              **workers.stats.as_dict(),
                              "breakers": {"postgres": workers.postgres_breaker.as_dict(),
                                           "redis": workers.redis_breaker.as_dict()}}}
        if deps.lifecycle.draining:
            status = "unavailable"
        elif pg["ok"] and rd["ok"] and supervisor.ok:
            status = "saturated" if qu.get("saturated") else "ready"
        elif pg["ok"] or rd["ok"]:
            status = "degraded"
        else:
            status = "unavailable"
        return (503 if status == "unavailable" else 200), {"status": status, "checks": checks}


class ReadyHandler(BaseHandler):
    async def get(self) -> None:
        status, body = await self.deps.readiness.check()
        self.write_json(body, status)
