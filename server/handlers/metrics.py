"""GET /metrics: Prometheus text, public and never rate limited (``ops/exporter.py``)."""

from __future__ import annotations

from server.handlers.base import BaseHandler
from server.metrics import CONTENT_TYPE


class MetricsHandler(BaseHandler):
    async def get(self) -> None:
        body = await self.deps.exporter.render()
        self.set_header("Content-Type", CONTENT_TYPE)
        self.finish(body)
