"""Raw files (timeseries.csv, .hgrm), report.md, and comparisons of paths and of runs.

Everything here reads ``summary.json``, so ``run.py report RUN_DIR`` can redraw a
run, and ``run.py report A B`` can compare two saved runs, without re-running.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import orjson

from harness import comparability, cost, numfmt, thresholds
from harness.costtable import baseline_line, cost_table
from harness.metrics import histogram_from, new_histogram
from harness.scenario import INGEST_KINDS, ScenarioError
from server.config import NAIVE, PIPELINED

MIN_CHANGE = 0.05  # deltas smaller than this are reported as "~" (noise)


def _ingest_busy_s(run: dict[str, Any]) -> float:
    """Seconds points were being sent (concurrent ingest phases share their span)."""
    spans: dict[float, float] = {}  # phases of one group share their start time
    for p in run["phases"]:
        if p["kind"] in INGEST_KINDS:
            spans[p["start_wall"]] = max(spans.get(p["start_wall"], 0.0),
                                         p["generator"]["wall_s"])
    return sum(spans.values())


def _accepted_rate(run: dict[str, Any]) -> float | None:
    """Points accepted per second of ingest time."""
    busy = _ingest_busy_s(run)
    points = sum(p["points_ok"] for p in run["phases"] if p["kind"] in INGEST_KINDS)
    return round(points / busy, 1) if busy else None


def _ingest_request_rate(run: dict[str, Any]) -> float | None:
    """Ingest requests (points, batches, uploads) answered per second of ingest time."""
    busy = _ingest_busy_s(run)
    sent = sum(p["sent"] for p in run["phases"] if p["kind"] in INGEST_KINDS)
    return round(sent / busy, 1) if busy else None


def _of(value: float | None, baseline_rps: float | None) -> float | None:
    # Kept to 6 decimals: a comparison's change is computed from these (numfmt shows 3).
    return round(value / baseline_rps, 6) if value is not None and baseline_rps else None


# Each headline figure's kind (harness.numfmt): how report.md writes it.
HEADLINE_KINDS = {
    "accepted points/s": "rate",
    "accepted points/s per baseline POST/s": "ratio",
    "ingest requests/s ÷ baseline POST/s": "ratio",
    "committed points/s": "rate",
    "committed points/s per baseline POST/s": "ratio",
    "worst phase p99 latency (ms)": "time",
    "e2e lag p99 (s)": "time",
    "loop lag max (ms)": "time",
    "server CPU µs/point": "time",
    "errors": "count",
    "dropped": "count",
    "dead letters": "count",
    "peak RSS (MB)": "size",
}
PER_BASELINE_NOTE = (
    "*per baseline POST/s*: points/s divided by the bare handler's requests/s, the unit "
    "the bars are written in (`> 25 × baseline`); a batch or an upload carries many points "
    "per request, so it exceeds 1× without the server answering more requests than the "
    "bare handler. *ingest requests/s ÷ baseline POST/s* compares requests with requests.")


def headline(run: dict[str, Any], baseline_rps: float | None = None) -> dict[str, Any]:
    """The few figures a comparison is about (their kinds: ``HEADLINE_KINDS``).

    Rates are also given per baseline POST/s: two days' runs compare by those,
    since the machine itself drifts between them.  Points per baseline POST/s
    is a unit, not a share of the bare handler's capacity (points are not
    requests); ingest requests/s ÷ baseline POST/s is that share.
    """
    phases = run["phases"]
    p99s = [p["latency_ms"].get("p99") for p in phases if p["latency_ms"].get("count")]
    server = run.get("server", {})
    accepted, committed = _accepted_rate(run), server.get("committed_points_per_s")
    whole = (run.get("cost") or {}).get("whole_run") or {}
    per_point = whole.get("cpu_us_per_point") or {}
    peak_rss = run.get("peak_rss_mb")
    return {
        "accepted points/s": accepted,
        "accepted points/s per baseline POST/s": _of(accepted, baseline_rps),
        "ingest requests/s ÷ baseline POST/s": _of(_ingest_request_rate(run), baseline_rps),
        "committed points/s": committed,
        "committed points/s per baseline POST/s": _of(committed, baseline_rps),
        "worst phase p99 latency (ms)": max(p99s) if p99s else None,
        "e2e lag p99 (s)": server.get("e2e_lag_s", {}).get("p99"),
        "loop lag max (ms)": (server.get("loop_lag_ms") or {}).get("max"),
        "server CPU µs/point": per_point.get("server"),
        "errors": sum(p["errors"] for p in phases),
        "dropped": sum(p["dropped"] for p in phases),
        # Points the server gave up on (by reason under each path); None: not read.
        "dead letters": (sum(server["dead_letters"].values())
                         if server.get("dead_letters") is not None else None),
        "peak RSS (MB)": round(peak_rss, 1) if peak_rss is not None else None,
    }


def headline_cell(metric: str, value: Any) -> str:
    """One headline figure as report.md writes it."""
    kind = HEADLINE_KINDS.get(metric)
    if kind is None or not isinstance(value, int | float):
        return numfmt.MISSING if value is None else str(value)
    return numfmt.figure(value, kind)


# The throughputs pipelined ÷ naive is taken of (``ratio.accepted``/``ratio.committed``).
RATIO_METRICS = ("accepted points/s", "committed points/s")


def compare_paths(runs: dict[str, dict[str, Any]], baseline_rps: float | None = None
                  ) -> dict[str, Any]:
    """Headline figures side by side; pipelined ÷ naive for the throughputs."""
    heads = {path: headline(run, baseline_rps) for path, run in runs.items()}
    out: dict[str, Any] = {"headline": heads}
    if {NAIVE, PIPELINED} <= set(runs):
        for metric in RATIO_METRICS:
            naive, piped = heads[NAIVE][metric], heads[PIPELINED][metric]
            out[metric] = {NAIVE: naive, PIPELINED: piped,
                           "ratio": round(piped / naive, 2) if naive and piped else None}
    return out


def recheck(summary: dict[str, Any], source: Path) -> list[dict[str, Any]]:
    """The threshold verdicts, re-evaluated from the saved runs and the thresholds' text.

    ``summary.json`` keeps each threshold as written, so editing that text (or
    the code that measures) and running ``run.py report`` re-decides them; a text
    that no longer parses raises ScenarioError naming ``source``.
    """
    definition = summary.get("scenario_definition", {})
    texts = [t["text"] for t in definition.get("thresholds", [])]
    phases = {p["name"] for run in summary["runs"].values() for p in run["phases"]}
    problems: list[str] = []
    parsed = thresholds.parse_texts(texts, phases, problems)
    if problems:
        raise ScenarioError(source, problems)
    return thresholds.check(parsed, summary["runs"], baseline_rps=baseline_rps(summary),
                            comparison=compare_paths(summary["runs"]))


def baseline_rps(summary: dict[str, Any]) -> float | None:
    """The run's bare-stack POST/s, or None (``--no-baseline``, or a run from before it)."""
    return (summary.get("baseline") or {}).get("bare_post_rps")


def write_raw(run_dir: Path, summary: dict[str, Any]) -> None:
    """timeseries.csv (per second, per path) and latency_<path>.hgrm."""
    rows = []
    for path, run in summary["runs"].items():
        per_second: dict[int, dict[str, Any]] = {}
        for sample in run["samples"]:
            second = int(sample["wall"] - run["started"])
            per_second.setdefault(second, {}).update({
                "queue_depth": sample.get("queue_depth"), "rss_mb": round(sample["rss_mb"], 1),
                "accepted_points_per_s": round(sample.get("accepted_per_s") or 0, 1),
                "phase": sample["phase"]})
        # A lag is the worst of one wall second: it goes to the row that second mostly covers.
        for lag_second, lag in cost.lag_seconds(run["samples"]).items():
            if (second := math.floor(lag_second + 0.5 - run["started"])) >= 0:
                row = per_second.setdefault(second, {})
                row["loop_lag_ms"] = max(lag, row.get("loop_lag_ms", 0.0))
        for wall, count in run.get("server", {}).get("committed_per_second", []):
            per_second.setdefault(int(wall - run["started"]), {})["committed_points"] = count
        for phase in run["phases"]:
            offset = int(phase["start_wall"] - run["started"])
            for s in phase["seconds"]:
                row = per_second.setdefault(offset + s["second"], {})
                for key, column in (("sent", "requests_sent"), ("ok", "requests_ok"),
                                    ("errors", "requests_errors"), ("points", "points_ok")):
                    row[column] = row.get(column, 0) + s[key]
                row["p99_ms"] = max(row.get("p99_ms", 0), s["p99_ms"])
        for second, row in sorted(per_second.items()):
            rows.append({"path": path, "second": second, **row})
        merged = new_histogram()
        for phase in run["phases"]:
            merged.add(histogram_from(phase))
        buffer = io.BytesIO()
        merged.output_percentile_distribution(buffer, 1000)  # values in ms
        (run_dir / f"latency_{path}.hgrm").write_bytes(buffer.getvalue())
    columns = ["path", "second", "phase", "requests_sent", "requests_ok", "requests_errors",
               "points_ok", "p99_ms", "accepted_points_per_s", "committed_points",
               "queue_depth", "rss_mb", "loop_lag_ms"]
    with open(run_dir / "timeseries.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _generator(gen: dict[str, Any]) -> str:
    cpu = numfmt.percent(gen["cpu_fraction"])
    return f"**behind**, {cpu} CPU" if gen["fell_behind"] else f"{cpu} CPU"


def _phase_tables(run: dict[str, Any]) -> list[str]:
    """Two tables of at most 8 columns: what was sent, then how long it took."""
    lines = ["| phase | kind | sent | errors | dropped | req/s | points/s | generator |",
             "|---|---|---|---|---|---|---|---|"]
    for p in run["phases"]:
        lines.append(
            f"| {p['name']} | {p['kind']} | {numfmt.count(p['sent'])} | "
            f"{numfmt.count(p['errors'])} | {numfmt.count(p['dropped'])} | "
            f"{numfmt.rate(p['rate'])} | {numfmt.rate(p['points_per_s'])} | "
            f"{_generator(p['generator'])} |")
    lines += ["", "| phase | p50 ms | p99 ms | p99.9 ms | max ms | service p99 ms |",
              "|---|---|---|---|---|---|"]
    for p in run["phases"]:
        lat, svc = p["latency_ms"], p["service_ms"]
        lines.append(f"| {p['name']} | " + " | ".join(
            numfmt.time(v) for v in (lat.get("p50"), lat.get("p99"), lat.get("p99.9"),
                                     lat.get("max"), svc.get("p99"))) + " |")
    return lines


def _baseline_scale(summary: dict[str, Any]) -> str:
    """The load factor ``reference_baseline`` applied, when it did."""
    factor = summary.get("baseline_scale", 1.0)
    reference = summary["scenario_definition"].get("reference_baseline")
    if not reference:
        return ""
    return (f" × {numfmt.ratio(factor)} (baseline ÷ the {numfmt.rate(reference)} POST/s "
            "its rates were written for)")


def _headline_table(heads: dict[str, dict[str, Any]]) -> list[str]:
    paths = list(heads)
    lines = ["| figure | " + " | ".join(paths) + " |", "|---|" + "---|" * len(paths)]
    for metric in next(iter(heads.values())):
        lines.append(f"| {metric} | "
                     + " | ".join(headline_cell(metric, heads[p][metric]) for p in paths)
                     + " |")
    return lines


def _ratio_lines(summary: dict[str, Any]) -> list[str]:
    """pipelined ÷ naive per throughput, each marked when the bars cannot be read into it."""
    lines = []
    for metric in RATIO_METRICS:
        ratio = summary["comparison"].get(metric, {}).get("ratio")
        if not ratio:
            continue
        line = f"**{metric}: {PIPELINED} ÷ {NAIVE} = {numfmt.ratio(ratio)}**"
        why = thresholds.ratio_not_comparable(summary, metric)
        if why:
            line += f" — not comparable with the bars: {why}."
        lines += ["", line]
    return lines


def render(run_dir: Path) -> tuple[Path, list[dict[str, Any]]]:
    """Draw the charts and write report.md from summary.json; (report.md, verdicts)."""
    from harness import charts

    summary = orjson.loads((run_dir / "summary.json").read_bytes())
    if summary.get("kind") == "chaos":
        from harness.chaos import report as chaos_report

        chaos_verdicts = chaos_report.recheck(summary, run_dir / "summary.json")
        return chaos_report.render(run_dir, summary, chaos_verdicts), chaos_verdicts
    # Always from the raw runs, so a run from before a headline figure existed has it too.
    summary["comparison"] = compare_paths(summary["runs"], baseline_rps(summary))
    verdicts = recheck(summary, run_dir / "summary.json")
    images = charts.draw_all(run_dir, summary)
    lines = [f"# {summary['scenario']} — {summary['created']}", "",
             summary.get("description", ""), "",
             f"Paths: {', '.join(summary['paths'])}; seed {summary['seed']}; scale "
             f"{summary['scale']:g}{_baseline_scale(summary)}; "
             f"commit `{summary['git_commit'][:12]}`; "
             f"{summary['environment']['cpus']} CPUs, Python "
             f"{summary['environment']['python']}.", "", baseline_line(summary), "",
             "## Headline", ""]
    lines += _headline_table(summary["comparison"]["headline"])
    lines += ["", PER_BASELINE_NOTE]
    lines += _ratio_lines(summary)
    lines += thresholds.table(verdicts)
    lines += cost_table(summary)
    for path, run in summary["runs"].items():
        lines += ["", f"## {path}", "",
                  f"Generator ceiling (closed loop on GET /health, 32 connections, 1 s): "
                  f"{numfmt.rate(run['generator_ceiling_rps'])} req/s. "
                  + ("Queue not drained within the timeout." if run["drain_s"] is None else
                     f"Queue drained {numfmt.time(run['drain_s'])} s after the load."), ""]
        lines += _phase_tables(run)
        dead = run.get("server", {}).get("dead_letters")
        if dead:
            lines += ["", "**Dead letters of this run** (by reason; `id_conflict`: an id "
                          "resent with other content): "
                      + ", ".join(f"`{reason}` {numfmt.count(count)}"
                                  for reason, count in dead.items())]
        behind = [p["name"] for p in run["phases"] if p["generator"]["fell_behind"]]
        if behind:
            lines += ["", f"**Warning: requests were not sent on schedule in "
                          f"{', '.join(behind)}** — dropped (no free connection within "
                          "1 s: the server was not answering fast enough) or dispatched "
                          "late (the generator itself; see its CPU). Those figures "
                          "understate what was asked of the server."]
    lines += ["", "## Charts", ""] + [f"![{name}]({name})" for name in images]
    lines += ["", "Latency is measured from each request's intended send time "
              "(coordinated-omission corrected); *service* time from its actual send. "
              "Raw figures: `summary.json`, `timeseries.csv`, `latency_<path>.hgrm`."]
    out = run_dir / "report.md"
    out.write_text("\n".join(lines) + "\n")
    return out, verdicts


def _change(va: Any, vb: Any, min_change: float) -> str:
    """B against A as a signed percentage, ``~`` below ``min_change``."""
    if isinstance(va, int | float) and isinstance(vb, int | float) and va:
        change = (vb - va) / abs(va)
        return "~" if abs(change) < min_change else (
            "+" if change > 0 else "") + numfmt.percent(change)
    return "–" if va == vb else "changed"


def _shown(run_dir: Path) -> Path:
    """A run folder as the comparison names it: resolved (``latest`` moves on), and
    relative to the working directory when it is under it."""
    resolved = run_dir.resolve()
    try:
        return resolved.relative_to(Path.cwd())
    except ValueError:
        return resolved


def compare_runs(a_dir: Path, b_dir: Path, out_dir: Path, min_change: float = MIN_CHANGE,
                 *, anyway: bool = False) -> tuple[Path, list[str]]:
    """Two saved runs: overlaid charts and a delta table ignoring changes < min_change.

    (report.md, what makes them incomparable).  Runs that differ in scenario,
    scale, seed, paths or baseline (``harness.comparability``) get their figures
    side by side without the change column, unless ``anyway``: then with it,
    under a warning naming what differs.
    """
    from harness import charts

    a = orjson.loads((a_dir / "summary.json").read_bytes())
    b = orjson.loads((b_dir / "summary.json").read_bytes())
    differ = comparability.differences(a, b)
    changes = anyway or not differ
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = {f"A {p}": r for p, r in a["runs"].items()}
    runs.update({f"B {p}": r for p, r in b["runs"].items()})
    merged = {"runs": runs, "comparison": compare_paths(runs)}
    images = charts.draw_all(out_dir, merged)
    lines = [f"# Comparison: A = {_shown(a_dir)}, B = {_shown(b_dir)}", "",
             f"Scenario: A {a.get('scenario')} (scale {a.get('scale', 1):g}, seed "
             f"{a.get('seed')}), B {b.get('scenario')} (scale {b.get('scale', 1):g}, seed "
             f"{b.get('seed')}); {comparability.commits(a, b)}.", "",
             f"Baseline (bare handler POST/s): A {numfmt.rate(baseline_rps(a))}, "
             f"B {numfmt.rate(baseline_rps(b))}; figures per baseline POST/s compare "
             "across days.", ""]
    if differ:
        lines += [("**Warning: these runs are not comparable — the changes below say as "
                   "much about what differs as about the code:**") if anyway else
                  ("**Not comparable: no changes are shown** (`run.py report A B "
                   "--compare-anyway` shows them under a warning):"), ""]
        lines += [f"- {line}" for line in differ] + [""]
    header = ["path", "figure", "A", "B"] + (["change"] if changes else [])
    if changes:
        lines += [f"Changes smaller than {min_change:.0%} are shown as ~.", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for path in sorted(set(a["runs"]) & set(b["runs"])):
        ha = headline(a["runs"][path], baseline_rps(a))
        hb = headline(b["runs"][path], baseline_rps(b))
        for metric in ha:
            va, vb = ha[metric], hb[metric]
            cells = [path, metric, headline_cell(metric, va), headline_cell(metric, vb)]
            if changes:
                cells.append(_change(va, vb, min_change))
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Charts", ""] + [f"![{name}]({name})" for name in images]
    out = out_dir / "report.md"
    out.write_text("\n".join(lines) + "\n")
    return out, differ
