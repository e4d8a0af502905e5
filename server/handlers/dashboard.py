"""The dashboard: its page and assets (public), its summary and its runs' charts (read).

The page holds no data: it is the same file for everyone, and it signs in by
asking for a token, which it keeps in memory only and sends as a bearer header
(see ``server/dashboard/app.js``).  Why a bearer header and not a session
cookie: a browser never attaches one on its own, so a page of another site
cannot make a signed-in request (no CSRF token needed), and no cookie exists
for a script or a proxy log to read.  The price is that a reload asks for the
token again.

The Content-Security-Policy allows scripts, styles and fetches from this origin
only (no inline script, no framing, no form submission anywhere): a value that
reached the page from the API (a competition's name, a dead letter's error)
is text, never code, even if the page's own escaping had a gap.
"""

from __future__ import annotations

import asyncio
import functools
from importlib import resources

from server.handlers.base import BaseHandler
from server.handlers.errors import NotFound
from server.ops.dashboard import for_role

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
       "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")
ASSET_TYPES = {
    "index.html": "text/html; charset=UTF-8",
    "app.js": "text/javascript; charset=UTF-8",
    "app.css": "text/css; charset=UTF-8",
}


@functools.cache
def asset(name: str) -> bytes:
    """A file of the page, read once (a few kB, packaged with ``server.dashboard``):
    ``make_app`` reads them all, so no request reads a file on the event loop."""
    return resources.files("server.dashboard").joinpath(name).read_bytes()


class PageHandler(BaseHandler):
    """GET /dashboard: the page."""

    asset = "index.html"

    def get(self) -> None:
        self.set_header("Content-Type", ASSET_TYPES[self.asset])
        self.set_header("Content-Security-Policy", CSP)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "no-referrer")
        self.finish(asset(self.asset))


class ScriptHandler(PageHandler):
    asset = "app.js"


class StyleHandler(PageHandler):
    asset = "app.css"


class SummaryHandler(BaseHandler):
    """GET /v1/dashboard/summary: ``ops/dashboard.py``'s cached summary, as the token's
    role may see it."""

    role = "read"

    async def get(self) -> None:
        assert self.identity is not None  # a role is required: prepare() set it
        summary = await self.deps.dashboard.get()
        self.write_json(for_role(summary, self.identity.role))


class RunChartHandler(BaseHandler):
    """GET /v1/dashboard/runs/{scenario}/{run}/{chart}: one chart of a benchmark run."""

    role = "read"

    async def get(self, scenario: str, run: str, chart: str) -> None:
        body = await asyncio.to_thread(self.deps.dashboard.runs.read_chart, scenario, run,
                                       chart)
        if body is None:
            raise NotFound("no such chart")
        self.set_header("Content-Type", "image/png")
        self.set_header("Cache-Control", "private, max-age=60")
        self.finish(body)
