"""A chaos run's report: the timeline chart, the faults with their recovery, the verdict.

Drawn from ``summary.json`` alone (``run.py report RUN_DIR`` redraws it), like
every other run's.  The timeline puts each fault as a shaded span over what the
clients saw — points acknowledged per second, p99 latency per second — and
what PostgreSQL got (points committed per second, from the rows' own
``committed_at``), so a dip reads against the fault that made it and a
recovery time against its span.  Overlapping faults share the time axis in
lanes, one lane per fault, so none hides another.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

from harness import thresholds
from harness.chaos.checker import FAILURES
from harness.chaos.run_counts import CHAOS_RUN_COUNTS
from harness.scenario import ScenarioError

matplotlib.use("Agg")
import matplotlib.pyplot as plt

# One colour per fault kind, stable across runs.
FAULT_COLORS = {
    "kill_server": "#d62728", "kill_server_child": "#ff9896", "kill_redis": "#9467bd",
    "stop_postgres": "#8c564b", "blackhole_redis": "#e377c2", "blackhole_postgres": "#7f7f7f",
    "redis_maxmemory": "#bcbd22", "pause_claiming": "#17becf", "client_cut": "#ff7f0e",
    "redis_failover": "#2ca02c",
}
ACCEPTED, COMMITTED, LATENCY, FAILED = "#1f77b4", "#2ca02c", "#444444", "#d62728"


def timeline(summary: dict[str, Any], out: Path) -> None:
    """timeline.png: throughput and p99 over the run, the faults shaded in lanes."""
    series = summary["timeline"]
    faults = [f for f in summary["faults"] if f.get("injected") and f.get("start")]
    t0 = summary["started"]
    fig, (lanes, rates, latency) = plt.subplots(
        3, 1, figsize=(11, 7.5), sharex=True,
        gridspec_kw={"height_ratios": [max(1.0, 0.18 * len(faults)), 3, 2]})
    for n, fault in enumerate(faults):
        end_at = fault.get("end") or fault["start"]  # never undone: drawn to its start
        start, end = fault["start"] - t0, max(end_at, fault["start"] + 0.3) - t0
        color = FAULT_COLORS.get(fault["kind"], "#999999")
        lanes.barh(n, end - start, left=start, height=0.8, color=color)
        lanes.text(end + 0.5, n, fault["kind"], va="center", fontsize=6)
        for ax in (rates, latency):
            ax.axvspan(start, end, color=color, alpha=0.18, lw=0)
    lanes.set_yticks([])
    lanes.set_ylim(len(faults) - 0.4 if faults else 0.6, -0.6)
    lanes.set_title(f"{summary['scenario']}: {len(faults)} faults of "
                    f"{len({f['kind'] for f in faults})} kinds — verdict "
                    f"{'OK' if summary['verdict']['ok'] else 'FAILED'}", fontsize=10)
    for key, label, color in (("accepted", "acknowledged points/s (clients)", ACCEPTED),
                              ("committed", "committed points/s (rows)", COMMITTED),
                              ("failed", "attempts/s answered 5xx or not at all", FAILED)):
        if key not in series:  # a run from before the series existed
            continue
        xs = [t for t, _ in series[key]]
        ys = [v for _, v in series[key]]
        rates.plot(xs, ys, color=color, lw=1.1, label=label)
    rates.set_ylabel("points/s", fontsize=8)
    rates.set_ylim(bottom=0)
    xs = [t for t, _ in series["p99_ms"]]
    latency.plot(xs, [v for _, v in series["p99_ms"]], color=LATENCY, lw=1,
                 label="p99 latency of the second's answers")
    latency.set_yscale("log")
    latency.set_ylabel("ms", fontsize=8)
    latency.set_xlabel("seconds since the load began", fontsize=8)
    latency.set_xlim(left=0)
    for ax in (rates, latency):
        ax.legend(fontsize=7, loc="upper right")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def _at(wall: float | None, t0: float) -> str:
    return "–" if wall is None else f"{wall - t0:,.1f}"


def _note(fault: dict[str, Any]) -> str:
    """What a fault's row must say beyond its times: not injected, not undone, no effect
    seen, its evidence."""
    if not fault.get("injected"):
        return f"not injected: {fault.get('error', '')}"
    notes = []
    if not fault.get("undone"):
        notes.append(f"not undone: {fault.get('error', '')}")
    if fault.get("effect") is False:
        notes.append("no effect seen")
    after = (fault.get("detail") or {}).get("after") or {}
    if "oom_refusals" in after:
        notes.append(f"{after['oom_refusals']:,} commands refused for memory")
    return "; ".join(notes)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{key} {value:,}" for key, value in counts.items())


def _s(value: float | None) -> str:
    return "never" if value is None else f"{value:,.1f}"


def render(run_dir: Path, summary: dict[str, Any], verdicts: list[dict[str, Any]]) -> Path:
    """Draw timeline.png and write report.md; the report's path."""
    timeline(summary, run_dir / "timeline.png")
    verdict = summary["verdict"]
    load = summary["load"]
    t0 = summary["started"]
    lines = [f"# {summary['scenario']} — {summary['created']}", "",
             summary.get("description", ""), "",
             f"Seed {summary['seed']}; scale {summary['scale']}; "
             f"`serve --processes {summary['processes']}`, path "
             f"{', '.join(summary['paths'])}; load {summary['load_s']:,.0f} s; commit "
             f"`{summary['git_commit'][:12]}`; {summary['environment']['cpus']} CPUs.", "",
             "## Verdict", "",
             f"**{'Exactly once: nothing lost, nothing doubled' if verdict['ok'] else 'FAILED'}"
             "**", "", "| check | count |", "|---|---|"]
    for key in FAILURES:
        lines.append(f"| {key} | {verdict[key]:,} |")
    counts = summary["runs"][summary["paths"][0]].get("chaos", {})
    lines += ["", "The run itself: " + ", ".join(
        f"{key} {counts[key]:,}" for key in CHAOS_RUN_COUNTS if key in counts) + "."]
    lines += ["", "Points: " + ", ".join(
        f"{key} {verdict[key]:,}" for key in ("acked", "committed", "refused",
                                              "unknown_committed", "unknown_not_committed",
                                              "dead_letters") if key in verdict) + "."]
    for key, examples in (verdict.get("examples") or {}).items():
        if examples:
            lines += ["", f"Examples of {key}: " + "; ".join(f"`{e}`" for e in examples)]
    lines += ["", "## Faults", "",
              "| # | fault | start (s) | end (s) | ingest recovered after (s) | "
              "commits recovered after (s) | note |", "|---|---|---|---|---|---|---|"]
    for n, fault in enumerate(summary["faults"], 1):
        lines.append(f"| {n} | {fault['kind']} | {_at(fault.get('start'), t0)} | "
                     f"{_at(fault.get('end'), t0)} | {_s(fault.get('ingest_recovered_s'))} | "
                     f"{_s(fault.get('commits_recovered_s'))} | {_note(fault)} |")
    lines += ["", "Recovery: from the fault's end until a probe point was acknowledged "
                  "(ingest) and until the committed total grew again (commits).", "",
              "## Load", "",
              f"{load['requests']:,} requests ({_counts(load['by_kind'])}); answers by "
              f"status: {_counts(load['statuses'])}; probes {load['probes']:,} "
              f"({load['probes_acked']:,} acknowledged); queue drained "
              f"{_s(summary.get('drain_s'))} s after the load."]
    lines += thresholds.table(verdicts, paths=False)
    lines += ["", "## Timeline", "", "![timeline](timeline.png)", ""]
    out = run_dir / "report.md"
    out.write_text("\n".join(lines))
    return out


def recheck(summary: dict[str, Any], source: Path) -> list[dict[str, Any]]:
    """A saved chaos run's verdicts, re-decided from its thresholds' text."""
    texts = [t["text"] for t in summary["scenario_definition"]["thresholds"]]
    problems: list[str] = []
    parsed = thresholds.parse_texts(texts, set(), problems)
    if problems:
        raise ScenarioError(source, problems)
    return thresholds.check(parsed, summary["runs"])
