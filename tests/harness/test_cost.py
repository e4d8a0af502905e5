"""The cost model's arithmetic: CPU deltas, loop-lag seconds per group, the report's table."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from harness import cost
from harness.costtable import cost_table


def test_cpu_of_a_process_tree_counts_a_busy_child(tmp_path: Path) -> None:
    """A real child that burns ~0.3 s of CPU shows up in its parent's tree, then once reaped."""
    clocks = cost.CpuClocks(os.getpid(), tmp_path)  # no store pid files: stores not measured
    before = clocks.read()
    assert before["postgres"] == (None, None) and before["redis"] == (None, None)
    child = subprocess.Popen([sys.executable, "-c",
                              "import time\nend = time.process_time() + 0.3\n"
                              "while time.process_time() < end: pass\n"
                              "print('busy', flush=True)\ntime.sleep(30)"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "busy\n"
        alive = cost.cpu_delta(before, clocks.read())
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    reaped = cost.cpu_delta(before, clocks.read())
    assert alive is not None and reaped is not None
    assert alive["server"] is not None and alive["server"] >= 0.3
    assert reaped["server"] >= alive["server"]  # its time moved to children_*, not lost
    assert alive["postgres"] is None and alive["redis"] is None


def test_the_servers_wait_for_a_cpu_is_read_from_the_scheduler(tmp_path: Path) -> None:
    """Two busy processes on one core: each waits, runnable, about half the time."""
    if not Path(f"/proc/{os.getpid()}/schedstat").exists():
        pytest.skip("no schedstat on this kernel")
    busy = "import time\nend = time.time() + 1.0\nwhile time.time() < end: pass\n"
    children = [subprocess.Popen([sys.executable, "-c", busy]) for _ in range(2)]
    try:
        for child in children:
            os.sched_setaffinity(child.pid, {min(os.sched_getaffinity(0))})
        clocks = cost.CpuClocks(children[0].pid, tmp_path)
        before = clocks.read()
        children[1].wait(timeout=10)
        delta = cost.cpu_delta(before, clocks.read())
    finally:
        for child in children:
            child.kill()
            child.wait()
    assert delta is not None and delta["server_wait"] is not None
    assert delta["server_wait"] > 0.1


def test_the_wait_for_a_cpu_counts_the_serving_forks(tmp_path: Path) -> None:
    """Under --processes N the loops run in forks of the server (same command line):
    a parent idle in waitpid while its fork and a busy neighbour share one core."""
    if not Path(f"/proc/{os.getpid()}/schedstat").exists():
        pytest.skip("no schedstat on this kernel")
    spin = "import time\nend = time.time() + 1.0\nwhile time.time() < end: pass\n"
    forking = ("import os, sys\npid = os.fork()\nif pid == 0:\n"
               + "".join("    " + line + "\n" for line in spin.splitlines())
               + "    os._exit(0)\nos.waitpid(pid, 0)\n")
    core = {min(os.sched_getaffinity(0))}
    server = subprocess.Popen([sys.executable, "-c", forking])
    neighbour = subprocess.Popen([sys.executable, "-c", spin])
    try:
        os.sched_setaffinity(neighbour.pid, core)
        os.sched_setaffinity(server.pid, core)  # its fork inherits it if not forked yet
        for fork in psutil.Process(server.pid).children():
            os.sched_setaffinity(fork.pid, core)
        clocks = cost.CpuClocks(server.pid, tmp_path)
        before = clocks.read()
        own_before = cost._run_delay_s(server.pid)
        time.sleep(0.8)
        after = clocks.read()
        own_after = cost._run_delay_s(server.pid)
    finally:
        for proc in (server, neighbour):
            proc.kill()
            proc.wait()
    delta = cost.cpu_delta(before, after)
    assert delta is not None and delta["server_wait"] is not None
    # The parent's own wait over the same window (it waited for a core while it
    # started, on a busy machine: not what this window measures).
    assert own_before is not None and own_after is not None
    assert delta["server_wait"] > 0.1 and own_after - own_before < 0.1


def test_a_changed_pid_makes_the_delta_unmeasured() -> None:
    before = {"server": (10, 1.0), "postgres": (20, 5.0), "redis": (30, 0.5)}
    after = {"server": (10, 1.5), "postgres": (21, 0.1), "redis": (30, 0.75)}
    assert cost.cpu_delta(before, after) == {"server": 0.5, "postgres": None, "redis": 0.25}
    assert cost.cpu_delta(None, after) is None  # --target: nothing was read


def test_loop_lag_seconds_are_deduplicated_and_assigned_by_overlap() -> None:
    samples = [{"lag_second": 100, "loop_lag_ms": 3.0},
               {"lag_second": 100, "loop_lag_ms": 9.0},  # read twice at a boundary
               *({"lag_second": s, "loop_lag_ms": float(s - 100)} for s in range(101, 111)),
               {"lag_second": None, "loop_lag_ms": None}]  # a sample that failed
    per_second = cost.lag_seconds(samples)
    assert per_second[100] == 9.0 and len(per_second) == 11
    stats = cost.lag_stats(per_second, start=100.5, end=103.2)  # seconds 100..103 overlap
    assert stats["seconds"] == 4 and stats["max"] == 9.0
    assert stats["p99"] == pytest.approx(8.82)  # between the two largest, not the max
    assert cost.lag_stats(per_second, 200, 201) == {"max": None, "p99": None, "seconds": 0}


def _phase(name: str, sent: int, points: int) -> dict:
    return {"name": name, "sent": sent, "points_ok": points}


def test_run_cost_per_request_per_point_and_whole_run() -> None:
    phases = [_phase("batches", 100, 50_000), _phase("health", 50, 0), _phase("reads", 40, 0)]
    groups = [{"label": "batches+health", "phases": ["batches", "health"], "start": 0.0,
               "end": 10.0, "cpu": {"server": 1.5, "postgres": 2.0, "redis": 0.5,
                                     "server_wait": 2.0}},
              {"label": "reads", "phases": ["reads"], "start": 11.0, "end": 13.0,
               "cpu": {"server": 0.2, "postgres": 0.04, "redis": 0.0}}]
    drain = {"start": 13.0, "end": 15.0, "cpu": {"server": 0.3, "postgres": 1.0, "redis": 0.1}}
    record, lag = cost.run_cost(groups, phases, drain, [], measured=True)
    first, reads = record["groups"]
    assert (first["requests"], first["points"]) == (150, 50_000)
    assert first["cpu_us_per_request"]["server"] == 10_000.0
    assert first["cpu_us_per_point"] == {"server": 30.0, "postgres": 40.0, "redis": 10.0}
    assert first["server_cores"] == 0.15
    assert first["server_cpu_wait"] == 0.2  # 2 s of 10 waiting for a core
    assert reads["server_cpu_wait"] is None  # not read: not guessed
    assert reads["cpu_us_per_point"] is None  # no ingest: per request only
    assert reads["cpu_us_per_request"]["postgres"] == 1000.0
    whole = record["whole_run"]
    assert whole["cpu_s"] == {"server": 2.0, "postgres": 3.04, "redis": 0.6}  # drain included
    assert whole["cpu_us_per_point"]["postgres"] == pytest.approx(60.8)
    assert lag == {"max": None, "p99": None, "seconds": 0}  # no lag samples at all

    lines = cost_table({"runs": {"pipelined": {"cost": record}}})
    table = "\n".join(lines)
    assert "| pipelined | batches+health | 150 | 50,000 | 10,000 | 30.0 | 40.0 | 10.0 |" in table
    assert "| pipelined | batches+health | 10.0 | 1.50 / 2.00 / 0.50 | 0.15 | 20.0% |" in table
    assert "| 1,000 /request |" in table  # PostgreSQL for the group without ingest
    rows = [line for line in lines if line.startswith("|")]
    assert len(rows) == 2 * (2 + 4)  # two tables: header, rule, 2 groups, drain, whole run
    assert max(row.count("|") - 1 for row in rows) == 8  # at most 8 columns each


def test_without_a_managed_server_cpu_is_not_measured() -> None:
    groups = [{"label": "p", "phases": ["p"], "start": 0.0, "end": 2.0, "cpu": None}]
    drain = {"start": 2.0, "end": 3.0, "cpu": None}
    samples = [{"lag_second": 0, "loop_lag_ms": 4.0}, {"lag_second": 1, "loop_lag_ms": 6.0}]
    record, lag = cost.run_cost(groups, [_phase("p", 10, 10)], drain, samples, measured=False)
    assert record["cpu_measured"] is False
    assert record["groups"][0]["cpu_s"] is None and record["whole_run"]["cpu_s"] is None
    assert record["groups"][0]["loop_lag_ms"]["max"] == 6.0  # lag comes from the API
    assert lag["max"] == 6.0
    table = "\n".join(cost_table({"runs": {"pipelined": {"cost": record}}}))
    assert "not measured" in table and "against `--target`" in table
