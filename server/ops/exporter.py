"""What ``GET /metrics`` answers: this process's state sampled, the queue's read once per
scrape, every process's values merged.

* **Sampling** (``Sampler``): a supervised task sets this process's pool and
  breaker gauges every ``SAMPLE_INTERVAL_S``, and the process that answers a
  scrape samples itself once more: in multi-process mode it cannot sample the
  others, whose files hold their last samples.
* **The read replica's lag** (with ``DATABASE_READ_URL``) is global too: the
  answering process's last lag check (``storage/replica.py``, every 0.5 s) is
  emitted at scrape time, once — no query of its own.
* **The queue's state** is global (one Redis for every process): it is read at
  scrape time, from one ``queue.stats()`` shared by the scrapes of
  ``queue_stats_cache_s``, by a collector on the scrape's own registry — so it
  is emitted once, by the process that answers, never summed.  So is the build
  info.
* **Multi-process** (``PROMETHEUS_MULTIPROC_DIR`` set, ``ops/metrics_dir.py``):
  ``MultiProcessCollector`` merges every process's files — counters and
  histograms add up; pool gauges are summed over the live processes
  (``livesum``) and a breaker's state is the worst of the live processes'
  (``livemax``); the live gauges of processes that are gone are dropped first.
  Without the variable, the default in-memory registry is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import os
import platform
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from server.errors import StoreUnavailable
from server.metrics import BREAKER, POOL_CONNECTIONS, POOL_WAITING, flush_requests
from server.ops.metrics_dir import ENV as MULTIPROC_ENV
from server.ops.metrics_dir import process_alive
from server.ops.refreshed import Refreshed
from server.queue.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from server.queue.redis_queue import PointQueue
from server.redis_client import pool_usage as redis_pool_usage
from server.storage.database import Database
from server.storage.replica import ReadReplica
from server.supervisor import StopSignal

SAMPLE_INTERVAL_S = 0.25  # pools and breakers; also bounds how long it delays a stop
QUEUE_STATS_CACHE_S = 1.0
QUEUE_STATS_TIMEOUT_S = 1.0
RENDER_CACHE_S = 1.0
BREAKER_STATE = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}


@dataclass(frozen=True)
class Sampler:
    """This process's connection pools and circuit breakers, as the gauges show them."""

    databases: Mapping[str, Database]  # pool name ("requests", "workers") -> its pools
    redis_clients: Mapping[str, aioredis.Redis]  # pool name -> client
    breakers: tuple[CircuitBreaker, ...]

    def pools(self) -> list[tuple[str, str, int, int, int]]:
        """(store, pool, in use, idle, waiting) of each of this process's pools now."""
        found = []
        for pool, db in self.databases.items():
            for role, (in_use, idle, waiting) in db.pool_usage().items():
                name = pool if role == "primary" else f"{pool}-{role}"
                found.append(("postgres", name, in_use, idle, waiting))
        for pool, client in self.redis_clients.items():
            found.append(("redis", pool, *redis_pool_usage(client)))
        return found

    def sample(self) -> None:
        """Set this process's pool and breaker gauges from their state now, and hand
        the requests counted since the last sample to their metrics."""
        flush_requests()
        for store, pool, in_use, idle, waiting in self.pools():
            _set_pool(store, pool, in_use, idle, waiting)
        for breaker in self.breakers:
            BREAKER.labels(breaker.name).set(BREAKER_STATE[breaker.state])

    async def run(self, stop: StopSignal) -> None:
        """``sample`` every ``SAMPLE_INTERVAL_S`` until ``stop`` (a supervised task)."""
        while not stop.requested:
            self.sample()
            await stop.pause(SAMPLE_INTERVAL_S)


def _set_pool(store: str, pool: str, in_use: int, idle: int, waiting: int) -> None:
    POOL_CONNECTIONS.labels(store, pool, "in_use").set(in_use)
    POOL_CONNECTIONS.labels(store, pool, "idle").set(idle)
    POOL_WAITING.labels(store, pool).set(waiting)


class _QueueStats:
    """One ``queue.stats()`` for all the scrapes of ``cache_s`` (None while Redis does
    not answer within ``QUEUE_STATS_TIMEOUT_S``)."""

    def __init__(self, queue: PointQueue, cache_s: float) -> None:
        self.queue = queue
        self.cache_s = cache_s
        self.value: dict[str, Any] | None = None
        self._stats = Refreshed(self._read)

    async def refresh(self) -> None:
        self.value = await self._stats.get(self.cache_s)

    async def _read(self) -> dict[str, Any] | None:
        try:
            return await asyncio.wait_for(self.queue.stats(), QUEUE_STATS_TIMEOUT_S)
        except (StoreUnavailable, TimeoutError):
            return None  # the queue's gauges are left out of this scrape


class _GlobalCollector:
    """The queue's gauges and the build info, emitted once per scrape."""

    def __init__(self, queue_stats: _QueueStats, build: dict[str, str],
                 max_points: int, reads: ReadReplica | None) -> None:
        self.queue_stats = queue_stats
        self.reads = reads
        self.build = build
        self.max_points = max_points

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("points_build_info", "Always 1; the labels say what runs: "
                                 "version, Python, ingest path.", labels=list(self.build))
        info.add_metric(list(self.build.values()), 1)
        yield info
        if self.reads is not None and self.reads.configured:
            yield GaugeMetricFamily(
                "points_replica_lag_seconds", "How far the read replica (DATABASE_READ_URL) "
                "is behind the primary, at most (NaN: unknown, e.g. the replica is down).",
                value=self.reads.lag_for_metrics())
            yield GaugeMetricFamily(
                "points_replica_serving_reads", "1 while reads go to the replica (it "
                "answers, within DATABASE_READ_MAX_LAG_S), 0 while they go to the primary.",
                value=int(self.reads.serving()))
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
            yield GaugeMetricFamily(f"points_queue_{name}",
                                    text + " Global (every queue shard, summed).", value=value)


class _Forward:
    """The default registry as one collector of a scrape registry (in-process mode)."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


class Exporter:
    """What ``GET /metrics`` answers, for one process.

    Rendering is synchronous work on the loop (milliseconds with every route's
    series, more with many processes' files), and ``/metrics`` is public: the
    text is rendered at most once per ``cache_s`` and served from memory in
    between — a scraper every 15 s never notices, a client hammering the route
    cannot take the loop.
    """

    def __init__(self, queue: PointQueue, sampler: Sampler, reads: ReadReplica | None = None,
                 *, ingest_path: str,
                 max_points: int, cache_s: float = RENDER_CACHE_S,
                 queue_stats_cache_s: float = QUEUE_STATS_CACHE_S) -> None:
        self.sampler = sampler
        self.cache_s = cache_s
        self.renders = 0  # texts rendered (the rest came from memory)
        self._body: bytes | None = None
        self._rendered_at = 0.0
        self.queue_stats = _QueueStats(queue, queue_stats_cache_s)
        self.multiproc_dir = os.environ.get(MULTIPROC_ENV)
        self.registry = CollectorRegistry(auto_describe=False)
        if self.multiproc_dir:
            MultiProcessCollector(self.registry, self.multiproc_dir)
        else:
            self.registry.register(_Forward())
        self.registry.register(_GlobalCollector(self.queue_stats, build_info(ingest_path),
                                                max_points, reads))

    async def render(self) -> bytes:
        """The Prometheus text: at most one queue read and one rendering per
        ``cache_s``, the rest in memory (or, multi-process, in a few small files)."""
        if self._body is not None and self._fresh():
            return self._body
        await self.queue_stats.refresh()
        if self._body is not None and self._fresh():  # rendered while this one waited
            return self._body
        self.sampler.sample()
        if self.multiproc_dir:
            forget_dead_processes(self.multiproc_dir)
        body = generate_latest(self.registry)
        self._body, self._rendered_at = body, time.monotonic()
        self.renders += 1
        return body

    def _fresh(self) -> bool:
        return time.monotonic() - self._rendered_at < self.cache_s


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
