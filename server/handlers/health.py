"""GET /health (liveness, no I/O) and GET /ready (``ops/readiness.py``'s cached probes)."""

from __future__ import annotations

from server.handlers.base import BaseHandler


class HealthHandler(BaseHandler):
    def get(self) -> None:
        if self.deps.serving.draining:
            self.write_json({"status": "draining"}, 503)
        else:
            self.write_json({"status": "ok"})


class ReadyHandler(BaseHandler):
    async def get(self) -> None:
        status, body = await self.deps.readiness.check()
        self.write_json(body, status)
