"""What each phase group cost: CPU time of the server, PostgreSQL and Redis, and loop lag.

Throughput alone does not say where a machine's cores went.  While each group
of concurrent phases runs, the runner reads the CPU clocks of the three
processes that do the work (``CpuClocks``) at its start and end; the deltas,
divided by the group's requests and accepted points, give a cost model —
server µs per request and per point, PostgreSQL and Redis µs per point — that
compares across machines and days better than rates do, and shows which
process a change made cheaper.  The points a group accepts are mostly
committed while it runs; what is left is committed in the drain, whose cost is
reported on its own line and in the whole-run line.

CPU clocks tick in 10 ms steps, so a group of a few hundred requests has a
coarse figure; scenarios meant for the cost model run for seconds.

The server's event-loop lag comes from ``GET /v1/admin/queue``'s ``loop``
section, which the sampler reads once a second: the worst time the loop was
held during the last full second.  Each group gets the max and p99 over the
seconds that overlap it; a group shorter than a second may fall in a second
no sample read (its lag is then None, shown as –).

Loop lag has two causes this model tells apart: a callback holding the loop
(the server's own doing), and the server being ready to run while the cores
are busy with PostgreSQL, Redis and the generator (the machine's).  The second
is read from Linux's scheduler statistics (``/proc/PID/schedstat``: time the
loop's thread spent runnable, waiting for a CPU) and shown as the share of
the group's wall time the server waited for a CPU.

With ``--target`` there is no process to read: CPU figures are None ("not
measured"), loop lag is still read from the API.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from pathlib import Path
from typing import Any

import psutil

STORES = ("server", "postgres", "redis")
MIN_CORES_SPAN_S = 0.5

# One ``CpuClocks.read()``: each process's (pid, CPU seconds), None where unread.
CpuReading = dict[str, tuple[int | None, float | None]]


def _pid(path: Path) -> int | None:
    """The pid on a pid file's first line, or None when there is none (yet)."""
    try:
        return int(path.read_text().split("\n", 1)[0].strip())
    except (OSError, ValueError):
        return None


def _tree_cpu_s(pid: int, skip: Collection[int] = ()) -> float | None:
    """User + system seconds of ``pid`` and every descendant, living or reaped.

    A reaped child's time is in its parent's ``children_*`` (PostgreSQL reaps
    each backend that ends), a living one's in its own clock, so summing both
    over the living tree counts every process once.  ``skip`` leaves out
    subtrees that are another store's (Redis is a child of the server).
    """
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    skipped: set[int] = set()
    for proc in procs:
        if proc.pid in skip:
            skipped.add(proc.pid)
            try:
                skipped.update(c.pid for c in proc.children(recursive=True))
            except psutil.Error:
                pass
    total = 0.0
    for proc in procs:
        if proc.pid in skipped:
            continue
        try:
            t = proc.cpu_times()
        except psutil.Error:  # ended between listing and reading: its parent reaps it
            if proc is root:
                return None
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def _run_delay_s(pid: int) -> float | None:
    """Seconds ``pid``'s main thread (the event loop's) has waited, runnable, for a
    CPU since it started; None where Linux's schedstat is not there to read."""
    try:
        with open(f"/proc/{pid}/schedstat") as stat:
            return int(stat.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


def _serving_run_delay_s(pid: int) -> float | None:
    """``_run_delay_s`` summed over the server and the serving processes it forked
    (``--processes N``: the event loops run in the forks, which share its command
    line; the stores it started do not)."""
    try:
        root = psutil.Process(pid)
        forks = [c.pid for c in root.children() if c.cmdline() == root.cmdline()]
    except psutil.Error:
        return None
    delays = [_run_delay_s(p) for p in (pid, *forks)]
    return None if delays[0] is None else sum(d for d in delays if d is not None)


class CpuClocks:
    """Cumulative CPU seconds of the server, PostgreSQL and Redis of one managed server."""

    def __init__(self, server_pid: int, data_dir: Path) -> None:
        self.server_pid = server_pid
        self.data_dir = data_dir

    def pids(self) -> dict[str, int | None]:
        return {"server": self.server_pid,
                "postgres": _pid(self.data_dir / "postgres" / "postmaster.pid"),
                "redis": _pid(self.data_dir / "redis" / "redis.pid")}

    def read(self) -> CpuReading:
        """Each process's (pid, CPU seconds), and the server's (pid, seconds waited for
        a CPU) as ``server_wait``; a delta across a changed pid is meaningless."""
        pids = self.pids()
        stores = {pid for name, pid in pids.items() if name != "server" and pid}
        clocks = {name: (pid, _tree_cpu_s(pid, stores if name == "server" else ())
                         if pid else None) for name, pid in pids.items()}
        clocks["server_wait"] = (self.server_pid, _serving_run_delay_s(self.server_pid))
        return clocks


def cpu_delta(before: CpuReading | None, after: CpuReading | None
              ) -> dict[str, float | None] | None:
    """CPU seconds spent (and ``server_wait``: waited) between two ``CpuClocks.read()``s;
    None when not measured."""
    if before is None or after is None:
        return None
    out: dict[str, float | None] = {}
    for name in (*STORES, "server_wait"):
        if name not in before or name not in after:
            continue
        (pid0, s0), (pid1, s1) = before[name], after[name]
        out[name] = (round(s1 - s0, 4) if pid0 == pid1 and s0 is not None and s1 is not None
                     else None)
    return out


def lag_seconds(samples: list[dict[str, Any]]) -> dict[int, float]:
    """The worst loop lag (ms) of each wall second the sampler saw, deduplicated."""
    worst: dict[int, float] = {}
    for row in samples:
        second, lag = row.get("lag_second"), row.get("loop_lag_ms")
        if second is not None and lag is not None:
            worst[second] = max(lag, worst.get(second, 0.0))
    return worst


def lag_stats(per_second: dict[int, float], start: float, end: float) -> dict[str, Any]:
    """Max and p99 of the seconds that overlap [start, end], in ms.

    The p99 interpolates linearly between ranks (numpy's default): a group
    has tens of seconds, not hundreds, and a nearest-rank p99 of fewer than
    100 values is always the max, which would say nothing the max does not.
    """
    values = sorted(lag for second, lag in per_second.items()
                    if second < end and second + 1 > start)
    if not values:
        return {"max": None, "p99": None, "seconds": 0}
    rank = 0.99 * (len(values) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(values) - 1)
    p99 = values[low] + (values[high] - values[low]) * (rank - low)
    return {"max": values[-1], "p99": round(p99, 2), "seconds": len(values)}


def _per(cpu: dict[str, float | None] | None, count: int) -> dict[str, float | None] | None:
    """CPU µs per unit of ``count``; None without CPU figures or a count."""
    if cpu is None or not count:
        return None
    return {name: None if (seconds := cpu.get(name)) is None else round(seconds * 1e6 / count, 2)
            for name in STORES}


def figures(label: str, phases: list[dict[str, Any]], seconds: float,
            cpu: dict[str, float | None] | None, lag: dict[str, Any]) -> dict[str, Any]:
    """One group's (or the drain's, or the whole run's) cost record for summary.json."""
    requests = sum(p["sent"] for p in phases)
    points = sum(p["points_ok"] for p in phases)
    server_s = (cpu or {}).get("server")
    wait_s = (cpu or {}).get("server_wait")
    return {"label": label, "phases": [p["name"] for p in phases],
            "seconds": round(seconds, 3), "requests": requests, "points": points,
            "cpu_s": cpu, "cpu_us_per_request": _per(cpu, requests),
            "cpu_us_per_point": _per(cpu, points),
            # CPU clocks tick every 10 ms: over a moment, cores would be mostly rounding.
            "server_cores": round(server_s / seconds, 3)
            if server_s is not None and seconds >= MIN_CORES_SPAN_S else None,
            # The share of the wall time the loop's thread was ready but had no core.
            "server_cpu_wait": round(wait_s / seconds, 3)
            if wait_s is not None and seconds >= MIN_CORES_SPAN_S else None,
            "loop_lag_ms": lag}


def run_cost(groups: list[dict[str, Any]], phases: list[dict[str, Any]],
             drain: dict[str, Any], samples: list[dict[str, Any]], measured: bool
             ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(a run's cost record, its loop lag over the whole run) from the runner's clocks.

    ``groups`` hold each group's phase names, wall ``start``/``end`` and ``cpu``
    delta; ``drain`` the same for the wait for the queue to empty.
    """
    lags = lag_seconds(samples)
    records = []
    for group in groups:
        members = [p for p in phases if p["name"] in group["phases"]]
        records.append(figures(group["label"], members, group["end"] - group["start"],
                               group["cpu"], lag_stats(lags, group["start"], group["end"])))
    drain_record = figures("drain", [], drain["end"] - drain["start"], drain["cpu"],
                           lag_stats(lags, drain["start"], drain["end"]))
    cpus = [g["cpu"] for g in groups] + [drain["cpu"]]
    total = None
    if measured and all(c is not None for c in cpus):
        total = {name: None if any(c.get(name) is None for c in cpus)
                 else round(sum(c[name] for c in cpus), 4) for name in STORES}
        if all(c.get("server_wait") is not None for c in cpus):
            total["server_wait"] = round(sum(c["server_wait"] for c in cpus), 4)
    start = groups[0]["start"] if groups else drain["start"]
    run_lag = lag_stats(lags, start, drain["end"])
    whole = figures("whole run", phases, drain["end"] - start, total, run_lag)
    return {"cpu_measured": measured, "groups": records, "drain": drain_record,
            "whole_run": whole}, run_lag
