"""The load generator: runs one phase in its own process, on its own uvloop.

Executors (``harness.executors``), chosen by type:

* ``ConstantRate`` / ``RampingRate`` — open model, as wrk2 and k6's
  arrival-rate executors: requests are due on a schedule (evenly spaced or
  Poisson) whatever the server does.  A due request waits for a free
  connection; latency counts from its *intended* time, so a stall shows up in
  every request it delayed (coordinated omission corrected).  A request that
  could not even be sent within ``MAX_SEND_DELAY_S`` of its due time is
  *dropped* and counted (k6's dropped iterations), never silently skipped.
* ``ConstantClients`` — closed model: ``vus`` clients, each sends, waits for the
  answer, thinks, repeats.  (Here intended = actual send time, which is exactly
  why a closed loop hides stalls.)
* ``BulkUpload`` — files of N points streamed as chunked CSV/NDJSON, built
  before the clock starts (``Workload.prebuild``).

A phase's process first prepares (imports, its workload, its files), then says
it is ready and waits for the runner's ``StartSignal``: the runner starts every
phase of a group at one wall time once all are ready, so no phase starts while
another is still building its files, and the runner can read the server's CPU
clocks exactly when the load starts.

The process records its own CPU time, and marks the phase ``fell_behind`` when
it dropped requests or dispatched them late by more than 100 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from harness.executors import BulkUpload, ConstantClients, ConstantRate, RampingRate
from harness.httpclient import Connection, HttpError, build_stream_head
from harness.metrics import PhaseRecorder
from harness.scenario import Phase, Setup
from harness.workload import Target, Workload

MAX_SEND_DELAY_S = 1.0
# uvloop's loop.time() ticks in whole milliseconds; latencies need microseconds.
_now = time.perf_counter
_STEP_S = 0.001


def _rate_pieces(executor: ConstantRate | RampingRate) -> list[tuple[float, float, float]]:
    """(duration_s, rate at start, rate at end) for each leg of the schedule."""
    match executor:
        case ConstantRate(rate=rate, duration_s=duration_s):
            assert rate is not None  # run_phase refuses a rate never resolved
            return [(duration_s, rate, rate)]
        case RampingRate(start_rate=rate, stages=stages):
            pieces = []
            for stage in stages:
                pieces.append((stage.duration_s, rate, stage.target))
                rate = stage.target
            return pieces


def schedule(executor: ConstantRate | RampingRate, rng: random.Random) -> Iterator[float]:
    """Intended send times (seconds from phase start) for an open-model phase."""
    poisson = executor.arrival == "poisson"
    start = 0.0
    for duration, r0, r1 in _rate_pieces(executor):
        if not poisson and r0 == r1:
            if r0 > 0:
                n = round(duration * r0)
                for i in range(n):
                    yield start + i / r0
        else:
            # Integrate the (linearly changing) rate in 1 ms steps; an arrival falls
            # where the accumulated expectation crosses the next threshold.
            acc, t = 0.0, 0.0
            threshold = rng.expovariate(1.0) if poisson else 1.0
            while t < duration:
                rate_now = r0 + (r1 - r0) * (t / duration)
                acc += rate_now * _STEP_S
                while acc >= threshold:
                    acc -= threshold
                    yield start + t
                    threshold = rng.expovariate(1.0) if poisson else 1.0
                t += _STEP_S
        start += duration


async def _send(conn: Connection, request: bytes) -> int:
    """The response status; 599 for a connection failure (the connection is reset)."""
    try:
        status, _ = await conn.request(request)
    except (HttpError, OSError):
        conn.close()
        return 599
    return status


async def _open_model(phase: Phase, executor: ConstantRate | RampingRate, work: Workload,
                      host: str, port: int, rec: PhaseRecorder, t0: float) -> None:
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(executor.connections):
        idle.put_nowait(Connection(host, port))
    tasks: set[asyncio.Task] = set()
    points = 1 if phase.kind == "point" else phase.batch_size

    async def fire(due: float, request: bytes, expected: tuple[int, ...]) -> None:
        conn = await idle.get()
        sent_at = _now()
        if sent_at - due > MAX_SEND_DELAY_S:
            rec.drop(due - t0, sent_at - due)
            idle.put_nowait(conn)
            return
        status = await _send(conn, request)
        done = _now()
        idle.put_nowait(conn)
        # From the intended time, or from the send when the loop's millisecond timer
        # woke early and the request left before it was due: latency is never less
        # than service time (an early answer once read as 0.001 ms).
        rec.record(due - t0, done - min(due, sent_at), done - sent_at, status,
                   status in expected, points if status in (201, 202) else 0)

    rng = random.Random(f"schedule:{phase.name}")
    for offset in schedule(executor, rng):
        due = t0 + offset
        delay = due - _now()
        if delay > 0:
            await asyncio.sleep(delay)
        lag = _now() - due
        rec.max_send_lag_s = max(rec.max_send_lag_s, lag)
        if lag > 0.01:
            rec.late += 1
        rec.intended += 1
        request, expected = work.next_request()
        task = asyncio.ensure_future(fire(due, request, expected))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)
    while not idle.empty():
        idle.get_nowait().close()


async def _closed_model(phase: Phase, executor: ConstantClients, work: Workload, host: str,
                        port: int, rec: PhaseRecorder, t0: float) -> None:
    end = t0 + executor.duration_s
    points = 1 if phase.kind == "point" else phase.batch_size

    async def client() -> None:
        conn = Connection(host, port)
        try:
            while _now() < end:
                request, expected = work.next_request()
                rec.intended += 1
                start = _now()
                status = await _send(conn, request)
                done = _now()
                rec.record(start - t0, done - start, done - start, status, status in expected,
                           points if status in (201, 202) else 0)
                if executor.think_time_s:
                    await asyncio.sleep(executor.think_time_s)
        finally:
            conn.close()

    await asyncio.gather(*(client() for _ in range(executor.vus)))


async def _bulk(upload: BulkUpload, work: Workload, host: str, port: int, rec: PhaseRecorder,
                t0: float, target: Target) -> None:
    content_type = "text/csv" if upload.format == "csv" else "application/x-ndjson"
    head = build_stream_head(f"{target.url}/v1/points/bulk", target.token, content_type)
    for pieces in work.files(upload):
        conn = Connection(host, port)
        rec.intended += 1
        start = _now()
        try:
            status, body = await conn.stream(head, iter(pieces))
            accepted = orjson.loads(body).get("accepted", 0) if status == 202 else 0
        except (HttpError, OSError, orjson.JSONDecodeError):
            status, accepted = 599, 0
        finally:
            conn.close()
        done = _now()
        rec.record(start - t0, done - start, done - start, status, status == 202, accepted)


async def run_phase(phase: Phase, setup: Setup, target: Target, seed: int, run_id: str,
                    start_at_wall: float, live: Any = None,
                    work: Workload | None = None) -> dict[str, Any]:
    """Run one phase from ``start_at_wall`` (a ``time.time()``); its result figures."""
    if isinstance(phase.executor, ConstantRate) and phase.executor.rate is None:
        raise ValueError(f"phase {phase.name!r}: rate_of_baseline was never resolved "
                         "to a rate (the run has no baseline)")
    parts = urlsplit(target.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    work = work or Workload(setup, phase, target, seed, run_id)
    rec = PhaseRecorder(phase.name, phase.kind, phase.warmup_s, live)
    await asyncio.sleep(max(0.0, start_at_wall - time.time()))
    t0 = _now()
    cpu0, wall0 = time.process_time(), time.monotonic()
    match phase.executor:
        case ConstantRate() | RampingRate() as executor:
            await _open_model(phase, executor, work, host, port, rec, t0)
        case ConstantClients() as executor:
            await _closed_model(phase, executor, work, host, port, rec, t0)
        case BulkUpload() as executor:
            await _bulk(executor, work, host, port, rec, t0, target)
    result = rec.result(time.monotonic() - wall0, time.process_time() - cpu0)
    result["executor"] = phase.executor.NAME
    result["start_wall"] = start_at_wall
    return result


@dataclass
class StartSignal:
    """How the runner starts a group's generator processes together (multiprocessing objects).

    Each process releases ``ready`` once prepared, then waits for ``go``;
    the runner sets ``at`` (a ``time.time()``) before it sets ``go``.
    """

    ready: Any  # Semaphore(0)
    go: Any  # Event
    at: Any  # RawValue("d")

    def wait(self, timeout_s: float) -> float:
        """Say this process is ready; the wall time to start at."""
        self.ready.release()
        if not self.go.wait(timeout_s):
            raise TimeoutError("the runner never started the group")
        return float(self.at.value)


def phase_process(phase: Phase, setup: Setup, target: Target, seed: int, run_id: str,
                  start: StartSignal, out: str, live: Any = None) -> None:
    """Entry point of a generator process: prepare, run the phase, write its result as JSON."""
    import uvloop

    work = Workload(setup, phase, target, seed, run_id)
    if isinstance(phase.executor, BulkUpload):
        work.prebuild(phase.executor)
    start_at_wall = start.wait(timeout_s=600)
    result = uvloop.run(run_phase(phase, setup, target, seed, run_id, start_at_wall, live,
                                  work))
    Path(out).write_bytes(orjson.dumps(result))


async def ceiling(url: str, connections: int = 32, seconds: float = 1.0) -> float:
    """GET /health as fast as possible (closed loop): the generator's own ceiling, req/s."""
    parts = urlsplit(url)
    from harness.httpclient import build_request

    request = build_request("GET", f"{url}/health")
    end = _now() + seconds
    count = 0

    async def client() -> None:
        nonlocal count
        conn = Connection(parts.hostname or "127.0.0.1", parts.port or 80)
        with contextlib.suppress(HttpError, OSError):
            while _now() < end:
                await conn.request(request)
                count += 1
        conn.close()

    await asyncio.gather(*(client() for _ in range(connections)))
    return count / seconds
