"""GET /openapi.json: the OpenAPI 3.1 document of this application (``handlers/openapi.py``).

Built on the first request from the application's own route table and settings,
then answered from the same bytes for the life of the process.
"""

from __future__ import annotations

from server.handlers.base import BaseHandler
from server.handlers.openapi import CachedDocument


class OpenApiHandler(BaseHandler):
    def get(self) -> None:
        # The application's own cache (a tornado application setting, as static_path is).
        document: CachedDocument = self.settings["openapi_document"]
        self.write_json(document.render(self.deps.settings, self.application))
