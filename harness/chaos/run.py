"""``run.py bench chaos``: the load, the nemesis and the checker, on real processes.

1. The bare stack's baseline (as every run measures it, for the report).
2. A ``ChaosStack``: embedded PostgreSQL and Redis behind proxies, ``run.py
   serve --processes N`` in front, on a fresh data directory.
3. The competitions and participants, plus one competition for the nemesis's
   probe points (so its values never mix with the load's standings).
4. The load in a process of its own (``load_process``: it shares the 2 cores
   with everything else, so it must never wait on this process's GIL) and the
   nemesis in a thread here, both timed from one moment.
5. When the load has ended (its retries included) and every fault is undone:
   wait for the queue to drain, read the rows, standings and dead letters, and
   run the checker over them with everything every client was told.
6. summary.json, timeline.png and report.md under ``bench-results/chaos/<time>/``
   (``--out`` chooses); the thresholds (``chaos.lost < 1``…) decide the exit code.
"""

from __future__ import annotations

import multiprocessing
import signal
import tempfile
import threading
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import orjson

from harness import thresholds
from harness.chaos import checker
from harness.chaos.checker import FAILURES
from harness.chaos.faults import Nemesis
from harness.chaos.ledger import ACKED, CLIENT_CUT, NO_ANSWER, Ledger, Sent
from harness.chaos.load import LoadTarget, load_process
from harness.chaos.plan import ChaosScenario
from harness.chaos.stack import ChaosStack
from harness.runner import (
    bare_baseline,
    environment,
    git_commit,
    setup_catalog,
    wait_drained,
)
from harness.scenario import Setup
from harness.server import api
from server.config import PIPELINED

SPAWN_S = 3.0  # the load process's start-up, before the common start time
PATH = PIPELINED  # the label of the one run (the stack serves the default path)


def bench_chaos(scenario: ChaosScenario, *, out_dir: Path, scale: float = 1.0,
                baseline: bool = True) -> tuple[Path, bool]:
    """Run ``scenario``; (its run directory, all thresholds met)."""
    base = bare_baseline(baseline)
    run_id = f"x{int(time.time() * 1000) % 10**10}"
    print(f"== {scenario.name}: {scenario.duration_s:g} s of load, "
          f"{scenario.nemesis.faults} faults of {len(set(scenario.nemesis.kinds))} kinds, "
          f"serve --processes {scenario.processes}", flush=True)
    # SIGTERM as SIGINT: the stack below is stopped (by pid) whatever ends the run.
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        with tempfile.TemporaryDirectory(prefix="chaos-") as work:
            stack = ChaosStack(Path(work), processes=scenario.processes,
                               env=scenario.server_env)
            try:
                stack.start()
                run = _run(scenario, stack, run_id)
            finally:
                stack.stop()
    finally:
        signal.signal(signal.SIGTERM, previous)
    run_dir, ok = _write(scenario, run, base, scale, out_dir)
    return run_dir, ok


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _run(scenario: ChaosScenario, stack: ChaosStack, run_id: str) -> dict[str, Any]:
    target = setup_catalog(stack.url, stack.token, scenario.setup, scenario.name, run_id)
    probes = setup_catalog(stack.url, stack.token, Setup(competitions=1,
                                                         participants_per_competition=1),
                           f"{scenario.name} probes", f"{run_id}-probe")
    probe_competition, probe_participants = next(iter(probes.participants.items()))
    specs = scenario.schedule()
    ctx = multiprocessing.get_context("spawn")
    cut = ctx.Event()
    started = time.time() + SPAWN_S
    deadline = started + scenario.duration_s
    with tempfile.TemporaryDirectory(prefix="chaos-ledger-") as tmp:
        out = Path(tmp) / "ledger.json"
        load = ctx.Process(target=load_process, daemon=True, args=(
            LoadTarget(stack.url, stack.token, target.participants), scenario.load,
            scenario.seed, run_id, deadline, out, cut))
        load.start()
        nemesis = Nemesis(stack, specs, run_id=run_id,
                          probe_point=(probe_competition, probe_participants[0]),
                          cut=cast(threading.Event, cut),
                          t0=time.monotonic() + (started - time.time()),
                          # capped below what it uses: writes that grow it are refused
                          # until the workers free 64 kB, so the fault bites whatever
                          # the load's rate (the first full run's cap at "used" did not)
                          maxmemory_margin_bytes=-64 * 1024)
        nemesis.start()
        try:
            load.join(scenario.duration_s + SPAWN_S + scenario.load.drain_s + 120)
            nemesis.join(max(0.0, deadline - time.time()) + 120)
        finally:
            nemesis.stop(timeout_s=180)  # every fault undone, whatever happened
            if load.is_alive():
                load.terminate()
                load.join(10)
        if load.exitcode != 0 or not out.exists():
            raise RuntimeError(f"the chaos load failed (exit {load.exitcode})")
        ledger = Ledger.from_json(out.read_bytes())
    load_ended = time.time()
    drain_s = wait_drained(stack.url, stack.token, scenario.drain_timeout_s, retries=True)
    competitions = [*target.participants, probe_competition]
    rows, standings, dead = checker.read_outcome(stack.database_url, stack.url, stack.token,
                                                 run_id, competitions)
    sent = ledger.sent + [Sent(p.competition_id, p.id, p.participant_id, p.value, p.outcome,
                               kind=p.kind) for p in nemesis.probes]
    verdict = checker.check(sent, rows, standings, dead)
    _, queue = api(stack.url, "GET", "/v1/admin/queue", stack.token)
    injected = [r for r in nemesis.records if r.get("injected")]
    for record in nemesis.records:
        record["effect"] = _effect(record, ledger)
    kinds = {r["kind"] for r in injected}
    return {
        "path": PATH, "phases": [], "started": started, "load_ended": load_ended,
        "drain_s": drain_s, "faults": nemesis.records, "nemesis_errors": nemesis.errors,
        "verdict": verdict.as_dict(), "load": _load_figures(ledger, nemesis),
        "timeline": _timeline(ledger, nemesis, stack.database_url, competitions, started),
        "events": [(round(e.t_sent - started, 3), round(e.t_answered - started, 3), e.kind,
                    e.status, round(e.latency_s, 4), e.points, e.accepted)
                   for e in ledger.events],
        "dlq_dropped": queue.get("throughput", {}).get("dlq_dropped"),
        "load_errors": ledger.errors[:10],
        "chaos": {**{key: getattr(verdict, key) for key in FAILURES},
                  "unknown_not_committed": verdict.unknown_not_committed,
                  "faults": len(injected), "fault_kinds": len(kinds),
                  "missing_kinds": len(set(scenario.nemesis.kinds) - kinds),
                  "not_injected": len(nemesis.records) - len(injected),
                  "without_effect": sum(1 for r in injected if r["effect"] is False),
                  "not_undone": sum(1 for r in injected if not r.get("undone")),
                  "nemesis_errors": len(nemesis.errors),
                  "load_errors": len(ledger.errors),
                  "dlq_dropped": int(queue.get("throughput", {}).get("dlq_dropped") or 0)},
    }


def _effect(record: dict[str, Any], ledger: Ledger) -> bool | None:
    """Whether the fault can be seen to have done something (None: nothing to look
    at — a killed process, a stopped store, a pause are done by being done).  A Redis
    capped at its memory refused commands; a cut found an upload in flight."""
    if not record.get("injected"):
        return None
    if record["kind"] == "redis_maxmemory":
        after = (record.get("detail") or {}).get("after") or {}
        return bool(after.get("oom_refusals"))
    if record["kind"] == "client_cut":
        start, end = record["start"], record.get("end") or record["start"]
        return any(e.status == CLIENT_CUT and start <= e.t_answered <= end + 1
                   for e in ledger.events)
    return None


def _load_figures(ledger: Ledger, nemesis: Nemesis) -> dict[str, Any]:
    outcomes = Counter(s.outcome for s in ledger.sent)
    return {"requests": len(ledger.events),
            "by_kind": dict(sorted(Counter(e.kind for e in ledger.events).items())),
            "statuses": dict(sorted(Counter(str(e.status) for e in ledger.events).items())),
            "points": dict(sorted(outcomes.items())),
            "probes": len(nemesis.probes),
            "probes_acked": sum(1 for p in nemesis.probes if p.outcome == ACKED)}


def _timeline(ledger: Ledger, nemesis: Nemesis, database_url: str, competitions: list[int],
              started: float) -> dict[str, list[list[float]]]:
    """Per second since ``started``: points acknowledged (clients), points committed
    (rows' ``committed_at``), and the p99 latency of the answers of that second."""
    accepted: dict[int, int] = defaultdict(int)
    unanswered: dict[int, int] = defaultdict(int)
    latencies: dict[int, list[float]] = defaultdict(list)
    for event in ledger.events:
        second = int(event.t_answered - started)
        accepted[second] += event.accepted
        latencies[second].append(event.latency_s)
        unanswered[second] += event.status in (NO_ANSWER, CLIENT_CUT) or event.status >= 500
    for probe in nemesis.probes:
        if probe.outcome == ACKED:
            accepted[int(probe.t_answered - started)] += 1
    committed = _committed_per_second(database_url, competitions, started)
    last = max([*accepted, *committed, 0])
    return {
        "accepted": [[s, accepted.get(s, 0)] for s in range(0, last + 1)],
        "committed": [[s, committed.get(s, 0)] for s in range(0, last + 1)],
        "failed": [[s, unanswered.get(s, 0)] for s in range(0, last + 1)],
        "p99_ms": [[s, round(_p99(latencies[s]) * 1000, 2)] for s in sorted(latencies)
                   if s >= 0],
    }


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _committed_per_second(database_url: str, competitions: list[int], started: float
                          ) -> dict[int, int]:
    import psycopg2

    conn = psycopg2.connect(database_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT floor(extract(epoch FROM committed_at) - %s)::int, count(*) "
                        "FROM points WHERE competition_id = ANY(%s) GROUP BY 1",
                        (started, competitions))
            return {int(s): int(n) for s, n in cur.fetchall()}
    finally:
        conn.close()


def _headline(run: dict[str, Any]) -> dict[str, float]:
    """The figures the dashboard's run list and the report's header show."""
    recovered = [r[key] for r in run["faults"] for key in
                 ("ingest_recovered_s", "commits_recovered_s") if r.get(key) is not None]
    verdict = run["verdict"]
    return {"faults injected": run["chaos"]["faults"],
            "fault kinds": run["chaos"]["fault_kinds"],
            "acked points": verdict["acked"], "lost": verdict["lost"],
            "doubled": verdict["doubled"], "wrong standings": verdict["wrong_standings"],
            "unknown, not committed": verdict["unknown_not_committed"],
            "worst recovery (s)": max(recovered, default=0.0)}


def _write(scenario: ChaosScenario, run: dict[str, Any], base: dict[str, Any] | None,
           scale: float, out_dir: Path) -> tuple[Path, bool]:
    from harness.chaos import report

    events = run.pop("events")
    verdicts = thresholds.check(scenario.thresholds, {PATH: run})
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = out_dir / scenario.name / stamp
    run_dir.mkdir(parents=True, exist_ok=True)
    summary = {
        "kind": "chaos", "scenario": scenario.name, "description": scenario.description,
        "seed": scenario.seed, "scale": scale, "paths": [PATH], "created": stamp,
        "processes": scenario.processes, "load_s": scenario.duration_s,
        "git_commit": git_commit(), "environment": environment(), "baseline": base,
        "scenario_definition": scenario.to_dict(), "runs": {PATH: run},
        "started": run["started"], "faults": run["faults"], "verdict": run["verdict"],
        "load": run["load"], "timeline": run["timeline"], "drain_s": run["drain_s"],
        "comparison": {"headline": {PATH: _headline(run)}}, "thresholds": verdicts,
    }
    (run_dir / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    with (run_dir / "events.csv").open("w") as out:  # every attempt, for a closer look
        out.write("sent_s,answered_s,kind,status,latency_s,points,accepted\n")
        out.writelines(",".join(map(str, row)) + "\n" for row in events)
    report.render(run_dir, summary, verdicts)
    latest = out_dir / scenario.name / "latest"
    if latest.is_symlink() or latest.exists():
        latest.unlink()
    latest.symlink_to(stamp)
    return run_dir, all(v["passed"] for v in verdicts)
