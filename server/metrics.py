"""Prometheus metric definitions, and the functions that feed them where things happen.

Figures come in three kinds, fed three ways:

* **Events** — requests, points accepted / committed / retried / dead-lettered,
  claim and write sizes, loop lag, task restarts — are counted here, by the code
  where they happen, once per request, claim, statement or settlement (never
  per point).
* **This process's state** — its connection pools, its circuit breakers — is
  sampled into the gauges below by ``ops/exporter.py``'s ``Sampler``.
* **The queue's state** is global (one Redis for every process): the exporter
  reads it at scrape time and emits it once, never summed.

Multi-process (``run.py serve --processes N``): ``serve`` sets
``PROMETHEUS_MULTIPROC_DIR`` before this module is first imported
(``ops/metrics_dir.py``), so every process writes its values to its own files
there and the process that answers a scrape merges them all.  Without the
variable (tests, the harness) the values live in this process's memory.  Either
way they belong to the process, not to an app: several apps in one process
(the test suite) add to the same counters.

This module imports nothing of the server: the queue, storage and handlers all
feed it.
"""

from __future__ import annotations

import os
import re
from bisect import bisect_left
from collections.abc import Mapping
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, values
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # text/plain; version=0.0.4; charset=utf-8
UNMATCHED = "unmatched"  # the route label of a request no route matched
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# In multi-process mode every increment asks the process its pid, to notice a
# fork: by default with ``os.getpid()``, a system call (glibc no longer caches
# it), several times a request.  The pid is kept here instead and renewed in a
# forked child before anything else runs in it, which is the same answer.
_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


def process_id() -> int:
    """This process's pid, without a system call."""
    return _pid


os.register_at_fork(after_in_child=_forked)
if values.ValueClass.__name__ == "MmapedValue":  # PROMETHEUS_MULTIPROC_DIR was set
    values.ValueClass = values.MultiProcessValue(process_identifier=process_id)

# No ``*_created`` series: they double the series count and the text format has
# no use for them (multi-process mode never has them anyway).

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
    "in their competition with the same content (a redelivery, or a point sent twice): "
    "skipped.  Other content is an id conflict, dead-lettered, not counted here.")
POINTS_RETRIED = Counter(
    "points_retried_total", "Points scheduled for a retry (an unknown competition or "
    "participant), counted once settled in Redis.")
POINTS_DEAD_LETTERED = Counter(
    "points_dead_lettered_total", "Entries added to the dead-letter queue, by reason: one "
    "per point (a chunk that cannot be split into points counts once).", ["reason"])
DLQ_DROPPED = Counter(
    "points_dlq_dropped_total", "Dead-letter entries removed by the DLQ's bounds "
    "(DLQ_MAX_ENTRIES, DLQ_MAX_AGE_S): lost to inspection and requeue.")
ENQUEUE_REPLICA_SHORT = Counter(
    "points_enqueue_replica_short_total", "ENQUEUE calls whose write fewer than "
    "QUEUE_WAIT_REPLICAS replicas confirmed within QUEUE_WAIT_REPLICAS_MS (their points "
    "then went to PostgreSQL directly).")
_COMMITTED_BY_WORKERS = POINTS_COMMITTED.labels("queue")
_COMMITTED_DIRECTLY = POINTS_COMMITTED.labels("direct")

# --- reads (server/storage/replica.py) ---------------------------------------------

READS = Counter(
    "points_reads_total", "Queries of the read endpoints (leaderboards, stats, points, "
    "participants, competitions), by the PostgreSQL that answered: the replica "
    "(DATABASE_READ_URL) or the primary.", ["target"])
_READS_BY_TARGET = {target: READS.labels(target) for target in ("replica", "primary")}

# --- rate limiting (server/access/ratelimit.py) ---------------------------------------------

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
    "the longest slice one callback held the loop (server/ops/loop_monitor.py).",
    buckets=LOOP_LAG_BUCKETS_S)
TASK_RESTARTS = Counter(
    "points_task_restarts_total", "Background tasks (queue workers, reclaimer, standings "
    "folder, loop monitor, metrics sampler, replica lag checks) that died and were "
    "restarted, by task.",
    ["task"])
PROCESS_RESTARTS = Counter(
    "points_process_restarts_total", "Server processes of serve --processes N that died "
    "and were replaced by the parent (counted by the parent).")

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


# Per request, the figures are added up in plain Python here and handed to
# prometheus_client by ``flush_requests`` — at every pool sample (each
# ``SAMPLE_INTERVAL_S``, 0.25 s), before this process answers a scrape, and at the
# stop — rather than three increments of shared-memory values under a lock on
# every request.  So a scrape sees every request its own process answered, and
# the others' as of their last sample at most 0.25 s before.
# (route, method, status) -> [requests, seconds in all, count per latency bucket]
_pending_requests: dict[tuple[str, str, int], list[Any]] = {}
_pending_accepted = 0
# (route, method, status) -> its counter and histogram children: ``labels()`` costs
# more than the increment.  Bounded: routes, methods and statuses are.
_request_series: dict[tuple[str, str, int], tuple[Any, Any]] = {}
_BUCKETS = len(LATENCY_BUCKETS_S) + 1  # and +Inf


def observe_request(handler: Any) -> None:
    """Count one finished request; called from the application's ``log_function``."""
    request = handler.request
    # Labels take only bounded values: a client's odd method is "other".
    method = request.method if request.method in _METHODS else "other"
    key = (getattr(handler, "route", None) or UNMATCHED, method, handler.get_status())
    entry = _pending_requests.get(key)
    if entry is None:
        entry = _pending_requests[key] = [0, 0.0, [0] * _BUCKETS]
    seconds = request.request_time()
    entry[0] += 1
    entry[1] += seconds
    # The first bucket whose bound is >= the duration: prometheus's ``le``.
    entry[2][bisect_left(LATENCY_BUCKETS_S, seconds)] += 1


def flush_requests() -> None:
    """Hand the requests and accepted points counted since the last flush to the
    metrics (see ``_pending_requests``)."""
    global _pending_requests, _pending_accepted
    pending, _pending_requests = _pending_requests, {}
    for key, (count, seconds, buckets) in pending.items():
        series = _request_series.get(key)
        if series is None:
            route, method, status = key
            series = _request_series[key] = (
                HTTP_REQUESTS.labels(route, method, str(status)),
                HTTP_DURATION.labels(route, method))
        counter, histogram = series
        counter.inc(count)
        add_observations(histogram, seconds, buckets)
    if _pending_accepted:
        accepted, _pending_accepted = _pending_accepted, 0
        POINTS_ACCEPTED.inc(accepted)


def add_observations(histogram: Any, seconds: float, buckets: list[int]) -> None:
    """Add to a histogram child what ``observe`` would have added for observations
    summing to ``seconds`` that fell ``buckets[i]`` into its i-th bucket (prometheus_client
    has no public call for many at once; ``test_metrics.py`` holds this to ``observe``)."""
    histogram._sum.inc(seconds)
    for bucket, count in zip(histogram._buckets, buckets, strict=True):
        if count:
            bucket.inc(count)


def read_served(target: str) -> None:
    """One read endpoint's query answered by ``target`` ("replica" or "primary")."""
    _READS_BY_TARGET[target].inc()


def points_accepted(count: int) -> None:
    """Points accepted by one request: counted with the requests (``flush_requests``)."""
    global _pending_accepted
    _pending_accepted += count


def points_written(inserted: int, duplicates: int, statement_points: int) -> None:
    """One worker write statement committed."""
    _COMMITTED_BY_WORKERS.inc(inserted)
    if duplicates:
        POINTS_DUPLICATES.inc(duplicates)
    WRITE_BATCH_SIZE.observe(statement_points)


def points_written_directly(inserted: int) -> None:
    _COMMITTED_DIRECTLY.inc(inserted)


def settled(retried: int, dead_by_reason: Mapping[str, int], dropped: int) -> None:
    """A settlement applied in Redis: points retried, dead letters added by reason, and
    dead letters the DLQ's bounds dropped."""
    if retried:
        POINTS_RETRIED.inc(retried)
    for reason, count in dead_by_reason.items():
        POINTS_DEAD_LETTERED.labels(reason).inc(count)
    if dropped:
        DLQ_DROPPED.inc(dropped)


def process_restarted() -> None:
    PROCESS_RESTARTS.inc()


def task_kind(name: str) -> str:
    """A supervised task's name without its index: "worker-3" → "worker"."""
    return re.sub(r"-[0-9]+$", "", name)

