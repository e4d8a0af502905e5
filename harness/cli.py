"""The harness's commands for ``run.py``: bench, scenarios, report."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from harness.chaos import plan as chaos_plan
from harness.chaos.plan import ChaosScenario
from harness.scenario import Scenario, ScenarioError, list_scenarios, load
from server.config import INGEST_PATHS

_ALL_PATHS = ",".join(INGEST_PATHS)
NOT_COMPARABLE = 3  # report A B: the runs differ in what decides the figures


def add_commands(commands: Any) -> None:
    bench = commands.add_parser(
        "bench", help=f"replay scenarios against the ingest paths ({_ALL_PATHS})",
        description="Start the server on fresh embedded stores once per path, replay the "
                    "scenario's seeded workload, write OUT/<scenario>/<time>/ (OUT: "
                    "bench-results/ beside run.py unless --out; git ignores it) and point "
                    "OUT/<scenario>/latest at it. The committed reference runs are in "
                    "results/. Exit 1 when a threshold fails, 2 on a bad scenario.")
    bench.add_argument("scenarios", nargs="+", metavar="SCENARIO",
                       help="a name from `run.py scenarios` or a path to a .toml file")
    bench.add_argument("--paths",
                       help="comma-separated ingest paths (default: the scenario's "
                            f"`paths`, else {_ALL_PATHS})")
    bench.add_argument("--scale", type=float, default=1.0,
                       help="multiply rates, vus and point counts (default 1); a chaos "
                            "scenario's load time and fault count instead")
    bench.add_argument("--seed", type=int, help="override the scenario's seed")
    bench.add_argument("--out", type=Path,
                       help="where runs go (default: bench-results/ beside run.py, ignored "
                            "by git; results/ holds the committed reference runs)")
    bench.add_argument("--target", help="URL of a running server (one path; no start-up)")
    bench.add_argument("--token", help="admin token for --target (or env BENCH_TOKEN)")
    bench.add_argument("--database-url", help="PostgreSQL of --target, for e2e lag")
    bench.add_argument("--no-baseline", action="store_true",
                       help="skip measuring the bare stack's POST/s first (saves ~5 s; "
                            "`× baseline` thresholds are then not measured, and "
                            "scenarios with rate_of_baseline refuse to run)")
    bench.add_argument("--vary", metavar="NAME=V1,V2",
                       help="also run each path once per value of one server setting "
                            "(e.g. QUEUE_FSYNC=always,everysec), all in this one run")
    bench.set_defaults(func=cmd_bench)

    scenarios = commands.add_parser("scenarios", help="list the shipped scenarios",
                                    description="List scenarios/*.toml with descriptions.")
    scenarios.set_defaults(func=cmd_scenarios)

    report = commands.add_parser(
        "report", help="re-render a saved run, or compare two",
        description="One RUN_DIR: redraw its charts and report.md and re-check its "
                    "thresholds from summary.json (exit 1 when any fails, like bench). "
                    "Two, A and B: write a comparison (overlaid charts, a table of A, B and "
                    "the change) to --out. Runs that differ in scenario, scale, seed, paths "
                    "or baseline (the larger bare-handler POST/s more than 1.2x the "
                    "smaller, or not measured) are not comparable: what differs is "
                    "printed, the table has no change column, and the exit code is 3, "
                    "unless --compare-anyway. Exit 2: not a run directory.")
    report.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    report.add_argument("--out", type=Path, help="comparison directory "
                        "(default bench-results/compare-<A>-vs-<B>)")
    report.add_argument("--min-change", type=float, default=0.05,
                        help="ignore relative changes below this (default 0.05)")
    report.add_argument("--compare-anyway", action="store_true",
                        help="show the changes between runs that are not comparable, under "
                             "a warning naming what differs (exit 0)")
    report.set_defaults(func=cmd_report)


def _load(name: str) -> Scenario | ChaosScenario:
    """A scenario file by name or path: a chaos scenario when it has a ``[chaos]`` table."""
    return chaos_plan.load(name) if chaos_plan.is_chaos(name) else load(name)


def cmd_scenarios(args: argparse.Namespace) -> int:
    for path in list_scenarios():
        try:
            scenario = _load(str(path))
            print(f"{path.stem:<20} {scenario.description}")
        except ScenarioError as exc:
            print(f"{path.stem:<20} INVALID: {'; '.join(exc.problems)}")
    return 0


def _bench_paths(args: argparse.Namespace, scenario: Scenario) -> list[str] | str:
    """The paths to run ``scenario`` on, or the problem with them as a message."""
    if args.paths is None:
        paths = list(scenario.paths)
    else:
        paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    bad = [p for p in paths if p not in INGEST_PATHS]
    if bad or not paths:
        return f"--paths: unknown path(s) {bad}; use any of {_ALL_PATHS}"
    if args.target and len(paths) != 1:
        return (f"{scenario.name}: --target runs one path: pass --paths with the path "
                "that server uses")
    if args.no_baseline and scenario.needs_baseline:
        return (f"{scenario.name}: {', '.join(scenario.needs_baseline)} reads the "
                "baseline: run without --no-baseline")
    return paths


def cmd_bench(args: argparse.Namespace) -> int:
    from harness.runner import RESULTS_DIR, bench

    variants: list[dict[str, str]] = [{}]
    if args.vary:
        name, _, values = args.vary.partition("=")
        if not name or not values or args.target:
            print("--vary takes NAME=V1,V2 (and starts its own servers: not with --target)",
                  file=sys.stderr)
            return 2
        variants = [{name.strip(): value.strip()} for value in values.split(",")]
    try:
        loaded = [_load(name) for name in args.scenarios]
    except ScenarioError as exc:
        print(f"invalid scenario {exc.path}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    chaos = [s for s in loaded if isinstance(s, ChaosScenario)]
    if chaos and (args.target or args.vary or args.paths):
        print(f"{chaos[0].name}: a chaos scenario starts its own stack on the default path: "
              "no --target, --vary or --paths", file=sys.stderr)
        return 2
    scenarios = [s for s in loaded if isinstance(s, Scenario)]
    plans = [(scenario, _bench_paths(args, scenario)) for scenario in scenarios]
    refused = [paths for _, paths in plans if isinstance(paths, str)]
    for message in refused:
        print(message, file=sys.stderr)
    if refused:
        return 2
    passed = True
    for scenario, paths in plans:
        if args.seed is not None:
            scenario = dataclasses.replace(scenario, seed=args.seed)
        run_dir, ok = bench(scenario.scaled(args.scale), list(paths),
                            out_dir=args.out or RESULTS_DIR, target_url=args.target,
                            token=args.token, database_url=args.database_url,
                            scale=args.scale, variants=variants,
                            measure_baseline=not args.no_baseline)
        print(f"{scenario.name}: {'all thresholds met' if ok else 'THRESHOLDS FAILED'} — "
              f"{run_dir / 'report.md'}")
        passed &= ok
    for plan in chaos:
        from harness.chaos.run import bench_chaos

        if args.seed is not None:
            plan = dataclasses.replace(plan, seed=args.seed)
        try:
            plan = plan.scaled(args.scale)
        except ValueError as exc:
            print(f"{plan.name}: {exc} (another --seed or a larger --scale fits)",
                  file=sys.stderr)
            return 2
        run_dir, ok = bench_chaos(plan, out_dir=args.out or RESULTS_DIR,
                                  scale=args.scale, baseline=not args.no_baseline)
        print(f"{plan.name}: {'all thresholds met' if ok else 'THRESHOLDS FAILED'} — "
              f"{run_dir / 'report.md'}")
        passed &= ok
    return 0 if passed else 1


def cmd_report(args: argparse.Namespace) -> int:
    from harness import report

    for run in args.runs:
        if not (run / "summary.json").exists():
            print(f"{run}: " + ("no such run directory" if not run.exists() else
                                "not a run directory (no summary.json)"), file=sys.stderr)
            return 2
    if len(args.runs) == 1:
        return _rerender(args.runs[0])
    if len(args.runs) != 2:
        print("report takes one run (re-render) or two (compare)", file=sys.stderr)
        return 2
    a, b = args.runs
    from harness.runner import RESULTS_DIR

    name = f"compare-{a.resolve().name}-vs-{b.resolve().name}"
    out, differ = report.compare_runs(a, b, args.out or RESULTS_DIR / name, args.min_change,
                                      anyway=args.compare_anyway)
    if differ:
        print("A and B are not comparable:", file=sys.stderr)
        for line in differ:
            print(f"  {line}", file=sys.stderr)
        if not args.compare_anyway:
            print("no changes shown (--compare-anyway shows them under a warning): "
                  f"{out}", file=sys.stderr)
            return NOT_COMPARABLE
        print("changes shown anyway, under a warning", file=sys.stderr)
    print(out)
    return 0


def _rerender(run_dir: Path) -> int:
    """Redraw one run and re-decide its thresholds: 0 all met, 1 one failed, 2 unreadable."""
    from harness import report

    try:
        out, verdicts = report.render(run_dir)
    except ScenarioError as exc:
        print(f"invalid thresholds in {exc.path}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    failed = [v for v in verdicts if not v["passed"]]
    for v in failed:
        print(f"  FAIL {v['path']}: {v['threshold']} (measured {v['shown']})")
    if not verdicts:
        verdict = "no thresholds"
    elif failed:
        verdict = f"THRESHOLDS FAILED ({len(failed)} of {len(verdicts)})"
    else:
        verdict = f"all thresholds met ({len(verdicts)})"
    print(f"{run_dir}: {verdict} — {out}")
    return 1 if failed else 0
