"""What ``QUEUE_WAIT_REPLICAS`` costs the enqueue path: a micro-benchmark.

    python -m harness.wait_replicas [--requests 4000] [--points 10]

Starts a Redis primary, its replica and three sentinels (the tests' launcher,
``tests/support/sentinel.py``: real processes, AOF with ``appendfsync always``),
and enqueues through the service's own queue and client (``PointQueue`` over a
``redis+sentinel://`` client, pipelined path, so requests coalesce into shared
ENQUEUE calls) at several concurrencies, with WAIT off and with ``WAIT 1``.
Prints, per row: requests/s, points/s, latency p50/p99 and the requests each
ENQUEUE call served (one WAIT serves them all).  Not part of the suite.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import statistics
import tempfile
import time
from pathlib import Path

from server.config import Settings
from server.points import now_us
from server.queue.redis_queue import PointQueue
from server.queue.strategy import make_strategy
from server.redis_client import redis_client


async def _run(url: str, concurrency: int, requests: int, points: int,
               wait_replicas: int) -> tuple[float, float, float, float]:
    client = redis_client(url, Settings(redis_max_connections=10))
    queue = PointQueue(client, make_strategy("pipelined", 1000), wait_replicas=wait_replicas,
                       wait_replicas_ms=1000)
    try:
        await client.flushdb()
        latencies: list[float] = []
        pending = iter(range(requests))

        async def lane() -> None:
            for n in pending:
                now = now_us()
                batch = [(f"r{n}-{i}", 1, 1, 1.0, now, now) for i in range(points)]
                started = time.perf_counter()
                await queue.enqueue(batch)
                latencies.append(time.perf_counter() - started)

        began = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
        cuts = statistics.quantiles(latencies, n=100)
        return (requests / elapsed, cuts[49] * 1000, cuts[98] * 1000,
                requests / queue.enqueue_calls)
    finally:
        await client.aclose()


async def main(requests: int, points: int, concurrencies: list[int]) -> None:
    # The tests' launcher (imported by name: the harness is type-checked, tests/ is not).
    launcher = importlib.import_module("tests.support.sentinel")
    group = launcher.SentinelGroup(Path(tempfile.mkdtemp(prefix="wait-replicas-")))
    try:
        print("| concurrent requests | WAIT | requests/s | points/s | p50 ms | p99 ms | "
              "requests per ENQUEUE (and WAIT) |")
        print("|---|---|---|---|---|---|---|")
        for concurrency in concurrencies:
            for wait in (0, 1):
                await _run(group.url, concurrency, requests // 10, points, wait)  # warm
                rate, p50, p99, per_call = await _run(group.url, concurrency, requests,
                                                      points, wait)
                print(f"| {concurrency} | {'WAIT 1' if wait else 'off'} | {rate:,.0f} | "
                      f"{rate * points:,.0f} | {p50:.2f} | {p99:.2f} | {per_call:.1f} |",
                      flush=True)
    finally:
        group.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--points", type=int, default=10)
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 16, 128])
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.points, args.concurrency))
