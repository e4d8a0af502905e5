"""Prometheus metrics: the metric objects, what feeds them, and the ``/metrics`` text.

Figures come in three kinds, fed three ways:

* **Events** — requests, points accepted / committed / retried / dead-lettered,
  claim and write sizes, loop lag, task restarts — are counted where they
  happen, once per request, claim, statement or settlement (never per point).
* **This process's state** — its connection pools, its circuit breakers — is
  sampled (``sample``) every ``SAMPLE_INTERVAL_S`` by a supervised task, and
  again by the process that answers a scrape.
* **The queue's state** is global (one Redis for every process): it is read at
  scrape time, from one ``queue.stats()`` shared by the scrapes of
  ``QUEUE_STATS_CACHE_S``, by a collector on the scrape's own registry — so it
  is emitted once, by the process that answers, never summed.  So is the build
  info.

Multi-process (``run.py serve --processes N``): ``serve`` sets
``PROMETHEUS_MULTIPROC_DIR`` before this module is first imported
(``server/metrics_dir.py``), so every process writes its values to its own
files there and the process that answers merges them all
(``MultiProcessCollector``): counters and histograms add up; pool gauges are
summed over the live processes (``livesum``) and a breaker's state is the worst
of the live processes' (``livemax``).  Without the variable (tests, the
harness) the default in-memory registry is read.  Either way the values belong
to the process, not to an app: several apps in one process (the test suite) add
to the same counters.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import importlib.metadata
import os
import platform
import re
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from server.errors import StoreUnavailable
from server.ops.metrics_dir import ENV as MULTIPROC_ENV
from server.ops.metrics_dir import process_alive
from server.ops.refreshed import Refreshed
from server.queue.breaker import CLOSED, HALF_OPEN, OPEN
from server.redis_client import pool_usage as redis_pool_usage

if TYPE_CHECKING:
    from server.app import Deps
    from server.queue.chunks import Settlement

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # text/plain; version=0.0.4; charset=utf-8
SAMPLE_INTERVAL_S = 0.25  # pools and breakers; also bounds how long it delays a stop
QUEUE_STATS_CACHE_S = 1.0
QUEUE_STATS_TIMEOUT_S = 1.0
UNMATCHED = "unmatched"  # the route label of a request no route matched
BREAKER_STATE = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# No ``*_created`` series: they double the series count and the text format has
# no use for them (multi-process mode never has them anyway).
disable_created_metrics()

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                     10.0)
LOOP_LAG_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
SIZE_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2000, 4000, 8000, 16000)

# --- HTTP (server/app.py's log_function calls observe_request) --------------------

HTTP_REQUESTS = Counter(
    "points_http_requests_total", "HTTP requests answered, by route template, method "
    "and status.", ["route", "method", "status"])
HTTP_DURATION = Histogram(
    "points_http_request_duration_seconds", "Time from a request's arrival to its "
    "answer, by route template and method.", ["route", "method"],
    buckets=LATENCY_BUCKETS_S)

# --- points ---------------------------------------------------------------------

POINTS_ACCEPTED = Counter(
    "points_accepted_total", "Points the API accepted (202, or 201 with ack=committed): "
    "queued in Redis, or written to PostgreSQL directly while Redis was down.")
POINTS_COMMITTED = Counter(
    "points_committed_total", "Points inserted into PostgreSQL (one whose id was already "
    "there is not counted), by writer: the queue's workers, or ingest directly while "
    "Redis was down.", ["via"])
POINTS_DUPLICATES = Counter(
    "points_duplicates_total", "Points the workers wrote whose id was already committed "
    "(a redelivery, or an id sent twice): skipped.")
POINTS_RETRIED = Counter(
    "points_retried_total", "Points scheduled for a retry (an unknown competition or "
    "participant), counted once settled in Redis.")
POINTS_DEAD_LETTERED = Counter(
    "points_dead_lettered_total", "Entries added to the dead-letter queue, by reason: one "
    "per point (a chunk that cannot be split into points counts once).", ["reason"])
DLQ_DROPPED = Counter(
    "points_dlq_dropped_total", "Dead-letter entries removed by the DLQ's bounds "
    "(DLQ_MAX_ENTRIES, DLQ_MAX_AGE_S): lost to inspection and requeue.")
_COMMITTED_BY_WORKERS = POINTS_COMMITTED.labels("queue")
_COMMITTED_DIRECTLY = POINTS_COMMITTED.labels("direct")

# --- rate limiting (server/ratelimit.py) ---------------------------------------------

RATE_LIMITED = Counter(
    "points_rate_limited_total", "Requests refused with 429 because their token was over "
    "RATE_LIMIT_PER_TOKEN.")
RATE_LIMIT_LOCAL = Counter(
    "points_rate_limit_local_decisions_total", "Rate-limit decisions made in-process "
    "because Redis did not answer (each process then limits on its own).")

# --- workers ----------------------------------------------------------------------

CLAIM_SIZE = Histogram(
    "points_claim_size_points", "Points per claim a worker leased from the queue.",
    buckets=SIZE_BUCKETS)
WRITE_BATCH_SIZE = Histogram(
    "points_write_batch_size_points", "Points per PostgreSQL write statement (one "
    "transaction).", buckets=SIZE_BUCKETS)
LOOP_LAG = Histogram(
    "points_event_loop_lag_seconds", "How late the event loop ran a 5 ms timer: at least "
    "the longest slice one callback held the loop (server/loop_monitor.py).",
    buckets=LOOP_LAG_BUCKETS_S)
TASK_RESTARTS = Counter(
    "points_task_restarts_total", "Background tasks (queue workers, reclaimer, standings "
    "folder, loop monitor, metrics sampler) that died and were restarted, by task.",
    ["task"])

# --- this process's state, sampled ------------------------------------------------

POOL_CONNECTIONS = Gauge(
    "points_pool_connections", "Connections of the PostgreSQL and Redis pools, by store, "
    "pool (requests, workers; requests-replica with DATABASE_READ_URL) and state "
    "(in_use, idle); summed over the live processes.", ["store", "pool", "state"],
    multiprocess_mode="livesum")
POOL_WAITING = Gauge(
    "points_pool_waiting", "Tasks waiting to borrow a connection, by store and pool; "
    "summed over the live processes.", ["store", "pool"], multiprocess_mode="livesum")
BREAKER = Gauge(
    "points_circuit_breaker_state", "The workers' circuit breaker per store: 0 closed, "
    "1 half-open (one probe allowed), 2 open; the worst of the live processes.",
    ["store"], multiprocess_mode="livemax")


# (route, method, status) -> its counter and histogram children: ``labels()`` costs
# more than the increment, on every request.  Bounded: routes, methods and
# statuses are.
_request_series: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def observe_request(handler: Any) -> None:
    """Count one finished request; called from the application's ``log_function``."""
    request = handler.request
    # Labels take only bounded values: a client's odd method is "other".
    method = request.method if request.method in _METHODS else "other"
    key = (getattr(handler, "route", None) or UNMATCHED, method, handler.get_status())
    series = _request_series.get(key)
    if series is None:
        route, _, status = key
        series = _request_series[key] = (HTTP_REQUESTS.labels(route, method, str(status)),
                                         HTTP_DURATION.labels(route, method))
    series[0].inc()
    series[1].observe(request.request_time())


def points_accepted(count: int) -> None:
    POINTS_ACCEPTED.inc(count)


def points_written(inserted: int, duplicates: int, statement_points: int) -> None:
    """One worker write statement committed."""
    _COMMITTED_BY_WORKERS.inc(inserted)
    if duplicates:
        POINTS_DUPLICATES.inc(duplicates)
    WRITE_BATCH_SIZE.observe(statement_points)


def points_written_directly(inserted: int) -> None:
    _COMMITTED_DIRECTLY.inc(inserted)


def settled(outcome: Settlement, dropped: int) -> None:
    """A settlement applied in Redis: its retries and dead letters, and the DLQ's trim."""
    if outcome.retries:
        POINTS_RETRIED.inc(sum(len(chunk.points) for chunk, _ in outcome.retries))
    if outcome.dead:
        for reason, count in collections.Counter(d.reason for d in outcome.dead).items():
            POINTS_DEAD_LETTERED.labels(reason).inc(count)
    if dropped:
        DLQ_DROPPED.inc(dropped)


def task_kind(name: str) -> str:
    """A supervised task's name without its index: "worker-3" → "worker"."""
    return re.sub(r"-[0-9]+$", "", name)


# --- sampling this process's state --------------------------------------------------


def sample(deps: Deps) -> None:
    """Set this process's pool and breaker gauges from their state now."""
    for pool, db in (("requests", deps.db), ("workers", deps.workers.db)):
        for role, (in_use, idle, waiting) in db.pool_usage().items():
            name = pool if role == "primary" else f"{pool}-{role}"
            _set_pool("postgres", name, in_use, idle, waiting)
    for pool, client in (("requests", deps.redis), ("workers", deps.workers.queue.redis)):
        _set_pool("redis", pool, *redis_pool_usage(client))
    for breaker in (deps.workers.postgres_breaker, deps.workers.redis_breaker):
        BREAKER.labels(breaker.name).set(BREAKER_STATE[breaker.state])


def _set_pool(store: str, pool: str, in_use: int, idle: int, waiting: int) -> None:
    POOL_CONNECTIONS.labels(store, pool, "in_use").set(in_use)
    POOL_CONNECTIONS.labels(store, pool, "idle").set(idle)
    POOL_WAITING.labels(store, pool).set(waiting)


async def sample_forever(deps: Deps, stopping: Callable[[], bool]) -> None:
    """``sample`` every ``SAMPLE_INTERVAL_S`` until ``stopping()`` (a supervised task):
    in multi-process mode the process that answers a scrape cannot sample the others."""
    while not stopping():
        sample(deps)
        await asyncio.sleep(SAMPLE_INTERVAL_S)


# --- the scrape ------------------------------------------------------------------


class _QueueStats:
    """One ``queue.stats()`` for all the scrapes of ``QUEUE_STATS_CACHE_S`` (None while
    Redis does not answer within ``QUEUE_STATS_TIMEOUT_S``)."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.value: dict[str, Any] | None = None
        self._stats = Refreshed(self._read)

    async def refresh(self) -> None:
        self.value = await self._stats.get(QUEUE_STATS_CACHE_S)

    async def _read(self) -> dict[str, Any] | None:
        try:
            return await asyncio.wait_for(self.deps.queue.stats(), QUEUE_STATS_TIMEOUT_S)
        except (StoreUnavailable, TimeoutError):
            return None  # the queue's gauges are left out of this scrape


class _GlobalCollector:
    """The queue's gauges and the build info, emitted once per scrape."""

    def __init__(self, queue_stats: _QueueStats, build: dict[str, str],
                 max_points: int) -> None:
        self.queue_stats = queue_stats
        self.build = build
        self.max_points = max_points

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("points_build_info", "Always 1; the labels say what runs: "
                                 "version, Python, ingest path.", labels=list(self.build))
        info.add_metric(list(self.build.values()), 1)
        yield info
        stats = self.queue_stats.value
        if stats is None:
            return
        for name, value, text in (
                ("depth", stats["depth"], "Points ready to be claimed."),
                ("inflight", stats["inflight"], "Points leased by a worker, not yet settled."),
                ("retry_scheduled", stats["retry_scheduled"], "Points waiting for a retry."),
                ("dead_letters", stats["dead"], "Entries in the dead-letter queue."),
                ("oldest_ready_age_seconds", stats["oldest_age_s"],
                 "Age of the oldest point ready to be claimed (0: none)."),
                ("paused", int(stats["paused"]), "1 while claiming is paused (admin)."),
                ("max_points", self.max_points,
                 "QUEUE_MAX_POINTS: ready + in flight + retrying past it, ingest answers "
                 "503 queue_full (0: no bound).")):
            yield GaugeMetricFamily(f"points_queue_{name}", text + " Global (one Redis).",
                                    value=value)


class _Forward:
    """The default registry as one collector of a scrape registry (in-process mode)."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


class Exporter:
    """What ``GET /metrics`` answers, for one application.

    Rendering is synchronous work on the loop (milliseconds with every route's
    series, more with many processes' files), and ``/metrics`` is public: the
    text is rendered at most once per ``cache_s`` and served from memory in
    between — a scraper every 15 s never notices, a client hammering the route
    cannot take the loop.
    """

    cache_s = 1.0

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self._body: bytes | None = None
        self._rendered_at = 0.0
        self.queue_stats = _QueueStats(deps)
        self.multiproc_dir = os.environ.get(MULTIPROC_ENV)
        self.registry = CollectorRegistry(auto_describe=False)
        if self.multiproc_dir:
            MultiProcessCollector(self.registry, self.multiproc_dir)
        else:
            self.registry.register(_Forward())
        self.registry.register(_GlobalCollector(
            self.queue_stats, build_info(deps.path.name), deps.settings.queue_max_points))

    async def render(self) -> bytes:
        """The Prometheus text: at most one queue read and one rendering per
        ``cache_s``, the rest in memory (or, multi-process, in a few small files)."""
        if self._fresh():
            return self._body  # type: ignore[return-value]
        await self.queue_stats.refresh()
        if self._fresh():  # another scrape rendered while this one waited
            return self._body  # type: ignore[return-value]
        sample(self.deps)
        if self.multiproc_dir:
            forget_dead_processes(self.multiproc_dir)
        self._body, self._rendered_at = generate_latest(self.registry), time.monotonic()
        return self._body

    def _fresh(self) -> bool:
        return self._body is not None and time.monotonic() - self._rendered_at < self.cache_s


def build_info(ingest_path: str) -> dict[str, str]:
    try:
        version = importlib.metadata.version("points-server")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return {"version": version, "python": platform.python_version(),
            "ingest_path": ingest_path}


def forget_dead_processes(path: str) -> None:
    """Drop the live gauges of processes that are gone (a child killed, or one that
    exited), so ``livesum``/``livemax`` count only processes that still run."""
    for entry in os.listdir(path):
        match = re.fullmatch(r"gauge_live\w+?_(\d+)\.db", entry)
        if match and not process_alive(int(match[1])):
            with contextlib.suppress(FileNotFoundError):  # another process got there first
                mark_process_dead(int(match[1]), path)
