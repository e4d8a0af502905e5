"""The tornado Application: the route table, each handler given the ``Deps``."""

from __future__ import annotations

from typing import Any

import tornado.web

from server.deps import Deps
from server.handlers import (
    admin,
    bulk,
    competitions,
    dashboard,
    docs,
    health,
    metrics,
    points,
    reads,
)
from server.handlers.base import NotFoundHandler
from server.handlers.catalogue import PATHS, RUN_CHART
from server.handlers.openapi import CachedDocument
from server.metrics import observe_request
from server.ops.logs import log_request


def request_finished(handler: tornado.web.RequestHandler) -> None:
    """Tornado's ``log_function``: called once per finished request, whatever its end."""
    log_request(handler)
    observe_request(handler)


def make_app(deps: Deps) -> tornado.web.Application:
    """The route table over ``deps``; every route also needs its entry in the OpenAPI
    catalogue (``handlers/catalogue.py``), which names its template."""
    d: dict[str, Any] = {"deps": deps}  # each handler's initialize() arguments
    # Tornado tries the patterns in this order, one regular expression each, on
    # every request (each is anchored, so order never changes which one matches):
    # the ingest routes, the hottest, come first.
    routes = [
        (r"/v1/points", points.PointsHandler, d),
        (r"/v1/points/bulk", bulk.BulkHandler, d),
        (r"/health", health.HealthHandler, d),
        (r"/ready", health.ReadyHandler, d),
        (r"/metrics", metrics.MetricsHandler, d),
        (r"/openapi\.json", docs.OpenApiHandler, d),
        (r"/v1/competitions", competitions.CompetitionsHandler, d),
        (r"/v1/competitions/([0-9]+)", competitions.CompetitionHandler, d),
        (r"/v1/competitions/([0-9]+)/participants", competitions.ParticipantsHandler, d),
        (r"/v1/competitions/([0-9]+)/leaderboard", reads.LeaderboardHandler, d),
        (r"/v1/competitions/([0-9]+)/stats", reads.StatsHandler, d),
        (r"/v1/competitions/([0-9]+)/points/([^/]{1,64})", points.PointHandler, d),
        (r"/v1/participants/([0-9]+)", reads.ParticipantHandler, d),
        (r"/v1/admin/queue", admin.QueueHandler, d),
        (r"/v1/admin/queue/pause", admin.PauseHandler, d),
        (r"/v1/admin/queue/resume", admin.ResumeHandler, d),
        (r"/v1/admin/dlq", admin.DeadLettersHandler, d),
        (r"/v1/admin/dlq/requeue", admin.RequeueHandler, d),
        (r"/dashboard", dashboard.PageHandler, d),
        (r"/dashboard/app\.js", dashboard.ScriptHandler, d),
        (r"/dashboard/app\.css", dashboard.StyleHandler, d),
        (r"/v1/dashboard/summary", dashboard.SummaryHandler, d),
        (RUN_CHART, dashboard.RunChartHandler, d),
    ]
    # Each route's handler knows its template ("/v1/competitions/{competition_id}"), as
    # /openapi.json names it: the label of its access-log lines and metrics.
    routes = [(pattern, handler, {**kwargs, "route": PATHS[pattern].template})
              for pattern, handler, kwargs in routes]
    for name in dashboard.ASSET_TYPES:
        dashboard.asset(name)  # read now, before the loop serves anything
    return tornado.web.Application(
        routes,
        log_function=request_finished,
        default_handler_class=NotFoundHandler,
        default_handler_args=d,
        compress_response=False,
        serve_traceback=False,
        # Built from this very route table on first use (handlers/docs.py).
        openapi_document=CachedDocument(),
    )
