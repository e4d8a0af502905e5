"""The tornado Application: the route table and the dependencies handed to handlers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
import tornado.web

from server.access.auth import Authenticator
from server.access.ratelimit import RateLimiter
from server.cache import ReadCache
from server.config import Settings
from server.handlers import admin, bulk, competitions, docs, health, metrics, points, reads
from server.handlers.base import NotFoundHandler
from server.handlers.openapi import PATHS, CachedDocument
from server.ingest.accept import Ingest
from server.metrics import Exporter, observe_request
from server.ops.logs import log_request
from server.queue.redis_queue import PointQueue
from server.queue.strategy import IngestPath
from server.queue.worker import Workers
from server.storage.database import Database


@dataclass
class LifecycleState:
    """Read by /health and the handlers; written by the lifecycle owner."""

    draining: bool = False
    inflight: int = 0  # requests between prepare() and on_finish()


@dataclass
class Deps:
    """Everything a handler may use; built once by the lifecycle owner."""

    settings: Settings
    db: Database
    redis: aioredis.Redis
    path: IngestPath
    queue: PointQueue
    workers: Workers
    ingest: Ingest
    cache: ReadCache
    auth: Authenticator
    lifecycle: LifecycleState
    readiness: Any = None
    limiter: RateLimiter | None = None  # None: RATE_LIMIT_PER_TOKEN=0, nothing is limited


def request_finished(handler: tornado.web.RequestHandler) -> None:
    """Tornado's ``log_function``: called once per finished request, whatever its end."""
    log_request(handler)
    observe_request(handler)


def make_app(deps: Deps) -> tornado.web.Application:
    deps.readiness = health.ReadinessProbe(deps)
    d = {"deps": deps}
    routes = [
        (r"/health", health.HealthHandler, d),
        (r"/ready", health.ReadyHandler, d),
        (r"/metrics", metrics.MetricsHandler, {**d, "exporter": Exporter(deps)}),
        # Built from this very table on first use; every route needs its entry there.
        (r"/openapi\.json", docs.OpenApiHandler, {**d, "document": CachedDocument()}),
        (r"/v1/competitions", competitions.CompetitionsHandler, d),
        (r"/v1/competitions/([0-9]+)", competitions.CompetitionHandler, d),
        (r"/v1/competitions/([0-9]+)/participants", competitions.ParticipantsHandler, d),
        (r"/v1/competitions/([0-9]+)/leaderboard", reads.LeaderboardHandler, d),
        (r"/v1/competitions/([0-9]+)/stats", reads.StatsHandler, d),
        (r"/v1/participants/([0-9]+)", reads.ParticipantHandler, d),
        (r"/v1/points", points.PointsHandler, d),
        (r"/v1/points/bulk", bulk.BulkHandler, d),
        (r"/v1/points/([^/]{1,64})", points.PointHandler, d),
        (r"/v1/admin/queue", admin.QueueHandler, d),
        (r"/v1/admin/queue/pause", admin.PauseHandler, {**d, "paused": True}),
        (r"/v1/admin/queue/resume", admin.PauseHandler, {**d, "paused": False}),
        (r"/v1/admin/dlq", admin.DeadLettersHandler, d),
        (r"/v1/admin/dlq/requeue", admin.RequeueHandler, d),
    ]
    # Each route's handler knows its template ("/v1/points/{point_id}"), as
    # /openapi.json names it: the label of its access-log lines and metrics.
    routes = [(pattern, handler, {**kwargs, "route": PATHS[pattern].template})
              for pattern, handler, kwargs in routes]
    return tornado.web.Application(
        routes,
        log_function=request_finished,
        default_handler_class=NotFoundHandler,
        default_handler_args=d,
        compress_response=False,
        serve_traceback=False,
    )
