"""GET /openapi.json: the OpenAPI 3.1 document of this application (``server/openapi.py``).

Built on the first request from the application's own route table and settings,
then answered from the same bytes for the life of the process.
"""

from __future__ import annotations

from typing import Any

from server.handlers.base import BaseHandler
from server.handlers.openapi import CachedDocument


class OpenApiHandler(BaseHandler):
    def initialize(self, deps: Any, route: str,  # type: ignore[override]
                   document: CachedDocument) -> None:
        super().initialize(deps, route)
        self.document = document

    def get(self) -> None:
        self.write_json(self.document.render(self.deps.settings, self.application))
