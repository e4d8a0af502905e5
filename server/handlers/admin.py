"""Admin views of the queue."""

from __future__ import annotations

from server.handlers.base import BaseHandler
from server.storage import reads


class QueueHandler(BaseHandler):
    role = "admin"

    async def get(self) -> None:
        deps = self.deps
        stats = await deps.queue.stats()
        totals = stats.pop("totals")
        async with deps.db.cursor(read=True) as cur:
            rate = await reads.committed_rate(cur)
        self.write_json({
            **stats,
            "path": deps.path.name,
            "throughput": {"committed_per_s_10s": rate, **totals},
            "workers": deps.workers.describe(),
            "worker_counters": deps.workers.stats.as_dict(),
        })
