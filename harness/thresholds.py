"""Thresholds: a scenario's pass/fail conditions, parsed from text and checked against runs.

A threshold is written ``"[path/]scope.metric" = "op value[unit]"``, e.g.
``"pipelined/health.latency.p99" = "< 50ms"``, or against the run's bare-stack
baseline, ``"singles.rate" = "> 0.75 × baseline"``.  It lives in its own module,
apart from the scenario file, because it is checked twice: by ``run.py bench``
right after the load, and by ``run.py report RUN_DIR`` from a saved
``summary.json`` alone — which stores each threshold as its text, so the text
is the one definition and both checks parse it the same way.

Scopes: a phase name or ``all`` (the phase figures), ``e2e_lag`` (accepted →
committed), ``server`` (committed rate, peak RSS, event-loop lag, the time the
queue took to empty after the load), ``ratio``
(pipelined ÷ naive, judged once per run, not per path) and ``chaos`` (a chaos
run's checker counts — ``lost``, ``doubled``… — and its faults, ``fault_kinds``).  Each metric has a
kind — a time, a fraction, a rate, a count, a size or a ratio — that decides
which units its value may carry and how a measurement is shown, so a slip such
as ``"server.peak_rss" = "< 250ms"`` is refused rather than judged.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from harness import numfmt
from harness.chaos.checker import FAILURES
from harness.chaos.run_counts import CHAOS_RUN_COUNTS
from server.config import INGEST_PATHS, NAIVE, PIPELINED

_NUMBER = r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+"
_CONDITION = re.compile(
    rf"\s*(<=|>=|<|>)\s*({_NUMBER})\s*(?:(ms|s|%|/s|MB)|([×x*])\s*baseline)?\s*")
_TEXT = re.compile(r"\s*(.+?)\s*((?:<|>).*)")  # "key op value": the key holds no < or >
_STAT = r"p50|p90|p95|p99|p99\.9|max|mean"
_LATENCY = re.compile(rf"(latency|service)\.({_STAT})")
# The shape of a spectrum, not its level: "storm.latency.p99_over_p50 < 3" holds on a
# slow day and a fast one alike, and fails on a tail that a few requests pay.
_SPREAD = re.compile(rf"(latency|service)\.({_STAT})_over_({_STAT})")
_E2E_METRIC = re.compile(r"p50|p90|p99|p99\.9|max")
_OPS = {"<": float.__lt__, "<=": float.__le__, ">": float.__gt__, ">=": float.__ge__}

# A metric's kind → the units its value may be written in (None: a bare number).
UNITS = {"time": (None, "ms", "s"), "fraction": (None, "%"), "rate": (None, "/s"),
         "count": (None,), "size": (None, "MB"), "ratio": (None,)}
_PHASE_KINDS = {"success": "fraction", "rate": "rate", "points_rate": "rate",
                "dropped": "count"}
_SERVER_KINDS = {"committed_rate": "rate", "peak_rss": "size",
                 "loop_lag.max": "time", "loop_lag.p99": "time", "drain": "time"}
_RATIOS = {"accepted": "accepted points/s", "committed": "committed points/s"}
# A chaos run's checker and nemesis (``harness/chaos``): counts.
CHAOS_METRICS = (*FAILURES, *CHAOS_RUN_COUNTS)
RESERVED_SCOPES = ("all", "e2e_lag", "server", "ratio", "chaos")  # never phase names
RATIO_LABEL = f"{PIPELINED} ÷ {NAIVE}"  # the "path" a ratio verdict is reported under


@dataclass(frozen=True)
class Threshold:
    text: str  # as written, e.g. "points.latency.p95 < 200ms"
    path: str | None  # one of INGEST_PATHS limits it to that path; None = every path
    scope: str  # a phase name, "all", "e2e_lag", "server" or "ratio"
    metric: str  # success | rate | points_rate | dropped | latency.p95 | committed_rate ...
    op: str
    value: float  # seconds for times, fraction for %, MB, count or rate otherwise
    of_baseline: bool = False  # value is a multiple of the run's bare_post_rps

    @property
    def kind(self) -> str:
        return metric_kind(self.scope, self.metric) or "count"

    def limit(self, baseline_rps: float | None) -> float | None:
        """The value a measurement is compared with; None when it needs a missing baseline."""
        if not self.of_baseline:
            return self.value
        return self.value * baseline_rps if baseline_rps else None

    def show(self, measured: float | None) -> str:
        """A measured value in the units thresholds are written in (ms, s, %, /s, MB),
        in report.md's number format (``harness.numfmt``)."""
        if measured is None:
            return "not measured"
        kind = self.kind
        if kind == "time":
            return (f"{numfmt.time(measured * 1000)} ms" if measured < 1 else
                    f"{numfmt.time(measured)} s")
        if kind == "fraction":
            return numfmt.percent(measured)
        if kind == "rate":
            return f"{numfmt.rate(measured)}/s"
        if kind == "size":
            return f"{numfmt.size(measured)} MB"
        if kind == "ratio":
            return numfmt.ratio(measured)
        return numfmt.count(measured)


def ratio_not_comparable(summary: dict[str, Any], metric: str) -> str | None:
    """Why a run's pipelined ÷ naive ``metric`` ("accepted points/s" or "committed
    points/s") cannot be read against the bars (≥ 32× accepted, ≥ 15× committed),
    or None when it can.

    A ratio is comparable with a bar only in a run that judges it: the scenario
    has a ``ratio.accepted``/``ratio.committed`` threshold (``bulk_upload``,
    ``competition_burst``), written for the load it offers at scale 1.  Any other
    scenario (``smoke``: seconds at a low rate, which the naive path keeps up
    with) or a scaled run offers a load the bar was never meant for.
    """
    name = next(key for key, label in _RATIOS.items() if label == metric)
    texts = [t.get("text", "") for t in
             summary.get("scenario_definition", {}).get("thresholds", [])]
    if not any(text.split(" ", 1)[0] == f"ratio.{name}" for text in texts):
        return (f"{summary.get('scenario', 'this scenario')} has no `ratio.{name}` bar "
                "(a ratio is judged where a scenario has its bar, at scale 1)")
    scale = summary.get("scale", 1.0)
    if scale != 1:
        return f"a run at scale {scale:g} (the bars are judged at scale 1)"
    return None


def metric_kind(scope: str, metric: str) -> str | None:
    """The kind of ``scope.metric`` (time, fraction, rate...), or None when unknown."""
    if scope == "e2e_lag":
        return "time" if _E2E_METRIC.fullmatch(metric) else None
    if scope == "server":
        return _SERVER_KINDS.get(metric)
    if scope == "ratio":
        return "ratio" if metric in _RATIOS else None
    if scope == "chaos":
        return "count" if metric in CHAOS_METRICS else None
    if _SPREAD.fullmatch(metric):
        return "ratio"
    return "time" if _LATENCY.fullmatch(metric) else _PHASE_KINDS.get(metric)


def _unknown_metric(scope: str, metric: str) -> str:
    if scope == "e2e_lag":
        return "e2e_lag takes p50, p90, p99, p99.9 or max"
    if scope == "server":
        return f"server takes {', '.join(_SERVER_KINDS)} (got {metric!r})"
    if scope == "ratio":
        return f"ratio takes accepted or committed (got {metric!r})"
    if scope == "chaos":
        return f"chaos takes {', '.join(CHAOS_METRICS)} (got {metric!r})"
    return (f"unknown metric {metric!r} (success, rate, points_rate, dropped, or "
            "latency/service . p50|p90|p95|p99|p99.9|max|mean, or a spread such as "
            "latency.p99_over_p50)")


def parse(key: str, condition: Any, phases: set[str], problems: list[str]
          ) -> Threshold | None:
    """One ``key = condition`` entry; None (and a problem naming the key) when it is bad."""
    where = f"thresholds.{key}"
    path = None
    if "/" in key:
        path, _, rest = key.partition("/")
        if path not in INGEST_PATHS:
            prefixes = " or ".join(f"{p}/" for p in INGEST_PATHS)
            problems.append(f"{where}: a path prefix must be {prefixes}")
            return None
    else:
        rest = key
    scope, _, metric = rest.partition(".")
    if scope not in RESERVED_SCOPES and scope not in phases:
        problems.append(f"{where}: {scope!r} is not a phase name nor one of "
                        f"{', '.join(map(repr, RESERVED_SCOPES))}")
        return None
    kind = metric_kind(scope, metric)
    if kind is None:
        problems.append(f"{where}: {_unknown_metric(scope, metric)}")
        return None
    if scope == "ratio" and path is not None:
        problems.append(f"{where}: a ratio compares both paths; it takes no path prefix")
        return None
    match = _CONDITION.fullmatch(condition) if isinstance(condition, str) else None
    if match is None:
        problems.append(f"{where}: must look like '< 200ms', '> 99%', '>= 500/s' "
                        "or '> 0.75 × baseline'")
        return None
    op, number, unit, times = match.groups()
    if times and kind != "rate":
        problems.append(f"{where}: '× baseline' compares rates (rate, points_rate, "
                        "server.committed_rate), not a " + kind)
        return None
    if unit not in UNITS[kind]:
        allowed = ", ".join(u for u in UNITS[kind] if u) or "none"
        problems.append(f"{where}: {metric} is a {kind}: unit {unit!r} does not fit "
                        f"(units: {allowed})")
        return None
    value = float(number)
    if unit == "ms":
        value /= 1000
    elif unit == "%":
        value /= 100
    return Threshold(text=f"{key} {condition.strip()}", path=path, scope=scope,
                     metric=metric, op=op, value=value, of_baseline=bool(times))


def parse_table(table: dict[str, Any], phases: set[str], problems: list[str]
                ) -> tuple[Threshold, ...]:
    """A scenario file's ``[thresholds]`` table."""
    parsed = (parse(key, condition, phases, problems) for key, condition in table.items())
    return tuple(t for t in parsed if t is not None)


def parse_texts(texts: Iterable[str], phases: set[str], problems: list[str]
                ) -> tuple[Threshold, ...]:
    """Thresholds from their ``Threshold.text`` form, as ``summary.json`` keeps them."""
    table: dict[str, Any] = {}
    for text in texts:
        match = _TEXT.fullmatch(text)
        if match is None:
            problems.append(f"thresholds: {text!r} is not 'KEY CONDITION' "
                            "(e.g. 'all.latency.p99 < 2s')")
        else:
            table[match[1]] = match[2]
    return parse_table(table, phases, problems)


def measure(threshold: Threshold, run: dict[str, Any]) -> float | None:
    """What one path's run measured for ``threshold`` (seconds, fraction, MB...), or None."""
    scope, metric = threshold.scope, threshold.metric
    server = run.get("server") or {}
    if scope == "e2e_lag":
        return server.get("e2e_lag_s", {}).get(metric)
    if scope == "server":
        if metric == "committed_rate":
            return server.get("committed_points_per_s")
        if metric == "peak_rss":
            return run.get("peak_rss_mb")
        if metric == "drain":  # None: the queue did not empty within drain_timeout_s
            return run.get("drain_s")
        lag_ms = (server.get("loop_lag_ms") or {}).get(metric.partition(".")[2])
        return lag_ms / 1000 if lag_ms is not None else None
    if scope == "chaos":
        value = (run.get("chaos") or {}).get(metric)
        return float(value) if value is not None else None
    phases = [p for p in run["phases"] if scope == "all" or p["name"] == scope]
    return _phase_figure(metric, phases) if phases else None


def evaluate(threshold: Threshold, run: dict[str, Any], baseline_rps: float | None = None
             ) -> tuple[bool, float | None]:
    """(passed, measured) for one threshold against one path's run; unmeasured fails.

    A ``× baseline`` threshold without a baseline is not measured either: judging
    it against nothing would pass or fail it for no reason.
    """
    limit = threshold.limit(baseline_rps)
    measured = measure(threshold, run) if limit is not None else None
    if measured is None or limit is None:
        return False, None
    return _OPS[threshold.op](float(measured), limit), measured


def _phase_figure(metric: str, phases: list[dict[str, Any]]) -> float | None:
    if metric == "success":
        # Dropped requests were due and never answered: they count against success.
        due = sum(p["sent"] + p["dropped"] for p in phases)
        return sum(p["ok"] for p in phases) / due if due else 0.0
    if metric == "rate":
        return sum(p["rate"] for p in phases)
    if metric == "points_rate":
        return sum(p["points_per_s"] for p in phases)
    if metric == "dropped":
        return float(sum(p["dropped"] for p in phases))
    spread = _SPREAD.fullmatch(metric)
    if spread:  # the worst phase's ratio of the two percentiles
        which, top, bottom = spread.groups()
        ratios = [hist[top] / hist[bottom] for p in phases
                  if (hist := p[f"{which}_ms"]).get(top) is not None and hist.get(bottom)]
        return max(ratios) if ratios else None
    which, _, stat = metric.partition(".")
    values = [v for p in phases if (v := p[f"{which}_ms"].get(stat)) is not None]
    return max(values) / 1000 if values else None


def _shown(threshold: Threshold, measured: float | None, baseline_rps: float | None) -> str:
    if threshold.of_baseline and not baseline_rps:
        return "not measured (no baseline in this run)"
    shown = threshold.show(measured)
    if threshold.of_baseline and measured is not None and baseline_rps:
        shown += (f" = {numfmt.ratio(measured / baseline_rps)} baseline "
                  f"({numfmt.rate(baseline_rps)}/s)")
    return shown


def check(thresholds: Iterable[Threshold], runs: dict[str, dict[str, Any]], *,
          baseline_rps: float | None = None, comparison: dict[str, Any] | None = None
          ) -> list[dict[str, Any]]:
    """One verdict per threshold and path it applies to, for summary.json and report.md.

    ``comparison`` is the summary's pipelined-vs-naive comparison; a ``ratio``
    threshold gets one verdict from it, reported under the path ``RATIO_LABEL``.
    """
    verdicts = []
    for threshold in thresholds:
        if threshold.scope == "ratio":
            ratio = (comparison or {}).get(_RATIOS[threshold.metric], {}).get("ratio")
            passed = ratio is not None and _OPS[threshold.op](float(ratio), threshold.value)
            verdicts.append({"threshold": threshold.text, "path": RATIO_LABEL,
                             "passed": passed, "measured": ratio,
                             "shown": threshold.show(ratio) if ratio is not None else
                             "not measured (needs both paths in the run)"})
            continue
        for path, run in runs.items():
            if threshold.path not in (None, run.get("path", path)):
                continue
            passed, measured = evaluate(threshold, run, baseline_rps)
            verdicts.append({"threshold": threshold.text, "path": path, "passed": passed,
                             "measured": measured,
                             "shown": _shown(threshold, measured, baseline_rps)})
    return verdicts


def table(verdicts: list[dict[str, Any]], *, paths: bool = True) -> list[str]:
    """report.md's thresholds section (none without verdicts); ``paths``: a column
    naming each verdict's path."""
    if not verdicts:
        return []
    path = "path | " if paths else ""
    lines = ["", "## Thresholds", "", f"| threshold | {path}measured | verdict |",
             "|---|" + "---|" * (3 if paths else 2)]
    for v in verdicts:
        where = f"{v['path']} | " if paths else ""
        lines.append(f"| `{v['threshold']}` | {where}{v['shown']} | "
                     f"{'pass' if v['passed'] else '**FAIL**'} |")
    return lines
