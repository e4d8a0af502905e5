"""The benchmark runs under ``RESULTS_DIR``, as the dashboard lists them.

A run is a folder ``<RESULTS_DIR>/<scenario>/<run>/`` holding the harness's
``summary.json`` and its charts (``*.png``); ``latest`` links and folders
without a summary are not runs.  What the dashboard shows of one is small:
scenario, time, scale, paths, each path's headline figures, how many of its
thresholds passed, and its charts' names.

Reading is blocking file I/O, so ``list_runs`` runs in a thread (the caller's
job) and remembers what it read of each summary by the file's modification time:
a folder of dozens of runs costs a ``stat`` and a directory listing each per
listing, not a JSON parse each.  The charts are listed every time: a run's
summary is written before its charts are drawn.

Paths from a request are never joined blindly: ``chart_path`` accepts plain
names only (no separators, no leading dot) and checks that what it resolved
lies inside the results folder, so ``..`` or a symbolic link cannot reach a
file outside it.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)

RUNS_MAX = 50  # newest first
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")  # a scenario's, run's or chart's name
CHART_SUFFIX = ".png"


class RunIndex:
    """The runs under one folder, newest first; each summary parsed once per change."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._seen: dict[Path, tuple[float, dict[str, Any] | None]] = {}

    def list_runs(self, limit: int = RUNS_MAX) -> list[dict[str, Any]]:
        """Blocking: call it off the event loop."""
        found: list[tuple[float, dict[str, Any]]] = []
        seen: dict[Path, tuple[float, dict[str, Any] | None]] = {}
        for summary in self._summaries():
            try:
                mtime = summary.stat().st_mtime
            except OSError:
                continue
            cached = self._seen.get(summary)
            entry = cached[1] if cached is not None and cached[0] == mtime else _read(summary)
            seen[summary] = (mtime, entry)
            if entry is not None:
                found.append((mtime, {**entry, "charts": _charts(summary.parent)}))
        self._seen = seen
        found.sort(key=lambda item: (item[1]["created"], item[0]), reverse=True)
        return [entry for _, entry in found[:limit]]

    def _summaries(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        paths = []
        for scenario in self.root.iterdir():
            if scenario.is_symlink() or not scenario.is_dir() or not NAME.fullmatch(scenario.name):
                continue
            for run in scenario.iterdir():
                summary = run / "summary.json"
                if (not run.is_symlink() and NAME.fullmatch(run.name)
                        and summary.is_file()):
                    paths.append(summary)
        return paths

    def read_chart(self, scenario: str, run: str, chart: str) -> bytes | None:
        """Blocking: the chart a request names, or None (none such, or not ours)."""
        path = self.chart_path(scenario, run, chart)
        try:
            return path.read_bytes() if path is not None else None
        except OSError:  # removed or unreadable since: as if it were not there
            return None

    def chart_path(self, scenario: str, run: str, chart: str) -> Path | None:
        """The chart file a request names, or None when there is none or it is not
        one of ours."""
        if not (all(NAME.fullmatch(part) for part in (scenario, run, chart))
                and chart.endswith(CHART_SUFFIX)):
            return None
        path = self.root / scenario / run / chart
        try:
            resolved = path.resolve(strict=True)
        except OSError:
            return None
        if not resolved.is_relative_to(self.root.resolve()) or not resolved.is_file():
            return None
        return resolved


def _charts(run: Path) -> list[str]:
    return sorted(p.name for p in run.glob("*" + CHART_SUFFIX) if NAME.fullmatch(p.name))


def _read(summary: Path) -> dict[str, Any] | None:
    """One run's entry; None for a summary that is not the harness's (logged once)."""
    run = summary.parent
    try:
        data = orjson.loads(summary.read_bytes())
        thresholds = data.get("thresholds") or []
        headline = (data.get("comparison") or {}).get("headline") or {}
        return {
            "scenario": run.parent.name,
            "run": run.name,
            "created": str(data.get("created") or run.name),
            "scale": scale if isinstance(scale := data.get("scale"), (int, float)) else None,
            "paths": [str(path) for path in data.get("paths") or []],
            "headline": {path: {label: value for label, value in figures.items()
                                if isinstance(value, (int, float))}
                         for path, figures in headline.items() if isinstance(figures, dict)},
            "thresholds": {"passed": sum(1 for t in thresholds if t.get("passed")),
                           "failed": sum(1 for t in thresholds if not t.get("passed"))},
        }
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        log.warning("results: %s is not a harness summary (%s)", summary, exc)
        return None
