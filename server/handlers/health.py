"""GET /health (liveness, no I/O) and GET /ready (``ops/readiness.py``'s cached probes).

``/ready`` answers everyone its status and which checks failed; the checks'
details (errors, addresses, pools, durability) only to an admin token.  A token
that is not an admin's, or cannot be verified now, gets the public answer: a
readiness probe must not turn into a 401 or a 503 of its own.
"""

from __future__ import annotations

from server.errors import NotAuthenticated, NotPermitted, RateLimited, StoreUnavailable
from server.handlers.base import BaseHandler
from server.ops.readiness import public


class HealthHandler(BaseHandler):
    def get(self) -> None:
        if self.deps.serving.draining:
            self.write_json({"status": "draining"}, 503)
        else:
            self.write_json({"status": "ok"})


class ReadyHandler(BaseHandler):
    async def get(self) -> None:
        status, body = await self.deps.readiness.check()
        self.write_json(body if await self._admin() else public(body), status)

    async def _admin(self) -> bool:
        header = self.request.headers.get("Authorization")
        if header is None:
            return False
        try:  # counted per address like any 401: /ready is no way around that limit
            await self.deps.auth.require(header, "admin", address=self.request.remote_ip)
        except (NotAuthenticated, NotPermitted, StoreUnavailable, RateLimited):
            return False
        return True
