"""GET /metrics: Prometheus text, public and never rate limited (``server/metrics.py``)."""

from __future__ import annotations

from typing import Any

from server.handlers.base import BaseHandler
from server.metrics import CONTENT_TYPE, Exporter


class MetricsHandler(BaseHandler):
    def initialize(self, deps: Any, route: str,  # type: ignore[override]
                   exporter: Exporter) -> None:
        super().initialize(deps, route)
        self.exporter = exporter

    async def get(self) -> None:
        body = await self.exporter.render()
        self.set_header("Content-Type", CONTENT_TYPE)
        self.finish(body)
