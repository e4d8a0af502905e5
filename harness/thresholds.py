"""Thresholds: a scenario's pass/fail conditions, parsed from text and checked against runs.

A threshold is written ``"[path/]scope.metric" = "op value[unit]"``, e.g.
``"pipelined/health.latency.p99" = "< 50ms"``.  It lives in its own module,
apart from the scenario file, because it is checked twice: by ``run.py bench``
right after the load, and by ``run.py report RUN_DIR`` from a saved
``summary.json`` alone — which stores each threshold as its text, so the text
is the one definition and both checks parse it the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from server.queue.paths import INGEST_PATHS

_CONDITION = re.compile(r"\s*(<|<=|>|>=)\s*([0-9.]+)\s*(ms|s|%|/s)?\s*")
_TEXT = re.compile(r"\s*(.+?)\s*((?:<|>).*)")  # "key op value": the key holds no < or >
_METRIC = re.compile(r"success|rate|dropped|(latency|service)\.(p50|p90|p95|p99|p99\.9|max|mean)")
_E2E_METRIC = re.compile(r"p50|p90|p99|p99\.9|max")
_OPS = {"<": float.__lt__, "<=": float.__le__, ">": float.__gt__, ">=": float.__ge__}


@dataclass(frozen=True)
class Threshold:
    text: str  # as written, e.g. "points.latency.p95 < 200ms"
    path: str | None  # one of INGEST_PATHS limits it to that path; None = every path
    scope: str  # a phase name, "all", or "e2e_lag"
    metric: str  # success | rate | dropped | latency.p95 | service.p99 | p99 (e2e)
    op: str
    value: float  # seconds for times, fraction for %, count or rate otherwise

    def show(self, measured: float | None) -> str:
        """A measured value in the units thresholds are written in (ms, s, %, /s)."""
        if measured is None:
            return "not measured"
        if self.scope == "e2e_lag" or "." in self.metric:  # a time, in seconds
            return f"{measured * 1000:,.1f} ms" if measured < 1 else f"{measured:,.3f} s"
        if self.metric == "success":
            return f"{measured:.2%}"
        if self.metric == "rate":
            return f"{measured:,.1f}/s"
        return f"{measured:g}"


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
    if scope == "e2e_lag":
        if not _E2E_METRIC.fullmatch(metric):
            problems.append(f"{where}: e2e_lag takes p50, p90, p99, p99.9 or max")
            return None
    elif scope != "all" and scope not in phases:
        problems.append(f"{where}: {scope!r} is not a phase name, 'all' or 'e2e_lag'")
        return None
    elif not _METRIC.fullmatch(metric):
        problems.append(f"{where}: unknown metric {metric!r} (success, rate, dropped, or "
                        "latency/service . p50|p90|p95|p99|p99.9|max|mean)")
        return None
    match = _CONDITION.fullmatch(condition) if isinstance(condition, str) else None
    if match is None:
        problems.append(f"{where}: must look like '< 200ms', '> 99%' or '>= 500/s'")
        return None
    op, number, unit = match.groups()
    value = float(number)
    if unit == "ms":
        value /= 1000
    elif unit == "%":
        value /= 100
    return Threshold(text=f"{key} {condition.strip()}", path=path, scope=scope,
                     metric=metric, op=op, value=value)


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


def evaluate(threshold: Threshold, run: dict[str, Any]) -> tuple[bool, float | None]:
    """(passed, measured) for one threshold against one path's run; unmeasured fails."""
    if threshold.scope == "e2e_lag":
        measured = run.get("server", {}).get("e2e_lag_s", {}).get(threshold.metric)
    else:
        phases = [p for p in run["phases"]
                  if threshold.scope == "all" or p["name"] == threshold.scope]
        measured = _measure(threshold.metric, phases) if phases else None
    if measured is None:
        return False, None
    return _OPS[threshold.op](float(measured), threshold.value), measured


def _measure(metric: str, phases: list[dict[str, Any]]) -> float | None:
    if metric == "success":
        # Dropped requests were due and never answered: they count against success.
        due = sum(p["sent"] + p["dropped"] for p in phases)
        return sum(p["ok"] for p in phases) / due if due else 0.0
    if metric == "rate":
        return sum(p["rate"] for p in phases)
    if metric == "dropped":
        return float(sum(p["dropped"] for p in phases))
    which, _, stat = metric.partition(".")
    values = [v for p in phases if (v := p[f"{which}_ms"].get(stat)) is not None]
    return max(values) / 1000 if values else None


def check(thresholds: Iterable[Threshold], runs: dict[str, dict[str, Any]]
          ) -> list[dict[str, Any]]:
    """One verdict per threshold and path it applies to, for summary.json and report.md."""
    verdicts = []
    for threshold in thresholds:
        for path, run in runs.items():
            if threshold.path not in (None, run.get("path", path)):
                continue
            passed, measured = evaluate(threshold, run)
            verdicts.append({"threshold": threshold.text, "path": path, "passed": passed,
                             "measured": measured, "shown": threshold.show(measured)})
    return verdicts
