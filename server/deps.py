"""``Deps``: everything a handler may use, built whole by the lifecycle owner, never changed.

Handlers receive it through ``initialize(deps=...)`` from the route table
(tornado's ``demos/blog`` way: no module globals).  Each member is built, started
and closed by ``runtime/lifecycle.py``; nothing here owns anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from server.access.auth import Authenticator
from server.access.ratelimit import RateLimiter
from server.cache import ReadCache
from server.config import Settings
from server.ingest.accept import Ingest
from server.ingest.idempotency import IdempotencyKeys
from server.ops.dashboard import DashboardSummary
from server.ops.exporter import Exporter
from server.ops.idle_bodies import IdleBodies
from server.ops.loop_monitor import LoopMonitor
from server.ops.readiness import ReadinessProbe, ServingState
from server.queue.redis_queue import PointQueue
from server.queue.strategy import IngestStrategy
from server.queue.worker import Workers
from server.storage.database import Database
from server.storage.replica import ReadReplica


@dataclass(frozen=True)
class Deps:
    settings: Settings
    db: Database  # the request handlers' primary pool (the workers have their own)
    reads: ReadReplica  # the read endpoints' queries: the replica, or the primary
    redis: aioredis.Redis  # the request handlers' client
    strategy: IngestStrategy
    queue: PointQueue
    workers: Workers
    ingest: Ingest
    cache: ReadCache
    auth: Authenticator
    serving: ServingState  # mutable state (draining, requests in flight), read by /health
    readiness: ReadinessProbe
    exporter: Exporter
    loop_monitor: LoopMonitor
    limiter: RateLimiter | None  # None: RATE_LIMIT_PER_TOKEN=0, nothing is limited
    idempotency: IdempotencyKeys  # Idempotency-Key records (the request handlers' client)
    dashboard: DashboardSummary  # GET /v1/dashboard/summary's cached answer
    bodies: IdleBodies  # the streamed bodies still arriving, cut when idle
