"""PNG charts drawn from a run's raw files (the only module that imports matplotlib)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from harness.metrics import histogram_from

COLORS = {"naive": "#d62728", "pipelined": "#1f77b4"}
STYLES = ("-", "--", ":", "-.")  # one per phase, the colour says the path


def _color(label: str) -> str:
    return COLORS.get(label.split(" ")[-1], None) or "#555555"


def _save(fig: Any, axes: list[Any], out: Path, ncol: int = 1) -> None:
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, ncol=ncol)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def _series(run: dict[str, Any], key: str) -> tuple[list[float], list[float]]:
    start = run["started"]
    rows = [r for r in run["samples"] if r.get(key) is not None]
    return [r["wall"] - start for r in rows], [r[key] for r in rows]


def throughput(runs: dict[str, dict], out: Path) -> None:
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for label, run in runs.items():
        xs, ys = _series(run, "accepted_per_s")
        ax.plot(xs, ys, label=f"{label}: accepted", color=_color(label))
        committed = run.get("server", {}).get("committed_per_second", [])
        if committed:
            base = run["started"]
            ax.plot([s - base for s, _ in committed], [n for _, n in committed],
                    linestyle="--", color=_color(label), label=f"{label}: committed")
    ax.set(xlabel="seconds since start", ylabel="points / s", title="Throughput over time")
    ax.set_yscale("symlog")
    _save(fig, [ax], out)


def latency_over_time(runs: dict[str, dict], out: Path) -> None:
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for label, run in runs.items():
        for index, phase in enumerate(run["phases"]):
            if len(phase["seconds"]) < 2:
                continue
            offset = phase["start_wall"] - run["started"]
            xs = [offset + s["second"] for s in phase["seconds"]]
            ax.plot(xs, [s["p99_ms"] for s in phase["seconds"]], color=_color(label),
                    linestyle=STYLES[index % len(STYLES)], marker=".",
                    label=f"{label} {phase['name']} p99")
    ax.set(xlabel="seconds since start", ylabel="latency from intended send (ms)",
           title="Latency over time (coordinated-omission corrected)")
    ax.set_yscale("log")
    _save(fig, [ax], out, ncol=2)


def spectrum(runs: dict[str, dict], out: Path) -> None:
    """Percentile spectra on a log 1/(1-p) axis, HdrHistogram-plotter style."""
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for label, run in runs.items():
        for index, phase in enumerate(run["phases"]):
            hist = histogram_from(phase)
            if hist.get_total_count() < 10:  # a spectrum of a few requests says nothing
                continue
            xs, ys = [], []
            for item in hist.get_percentile_iterator(5):
                pct = item.percentile_level_iterated_to
                if pct >= 100:
                    break
                xs.append(1 / (1 - pct / 100))
                ys.append(item.value_iterated_to / 1000)
            ax.plot(xs, ys, color=_color(label), linestyle=STYLES[index % len(STYLES)],
                    label=f"{label} {phase['name']}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ticks = [1, 2, 10, 100, 1000, 10000]
    ax.set_xticks(ticks, ["0%", "50%", "90%", "99%", "99.9%", "99.99%"])
    ax.set(xlabel="percentile", ylabel="latency (ms)", title="Latency by percentile")
    _save(fig, [ax], out)


def queue_and_lag(runs: dict[str, dict], out: Path) -> None:
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6))
    for label, run in runs.items():
        xs, ys = _series(run, "queue_depth")
        top.plot(xs, ys, color=_color(label), label=label)
        xs, ys = _series(run, "rss_mb")
        bottom.plot(xs, ys, color=_color(label), label=f"{label} RSS")
    top.set(ylabel="queue depth (points)", title="Queue depth and server memory")
    bottom.set(xlabel="seconds since start", ylabel="server RSS (MB)")
    lags = {label: run.get("server", {}).get("e2e_lag_s", {}) for label, run in runs.items()}
    text = "   ".join(f"{label} e2e lag p50 {lag.get('p50', 0):.3f}s p99 {lag.get('p99', 0):.3f}s"
                       for label, lag in lags.items() if lag)
    if text:
        top.text(0.01, 0.95, text, transform=top.transAxes, fontsize=8, va="top")
    _save(fig, [top, bottom], out)


def bars(comparison: dict[str, Any], out: Path) -> None:
    metrics = [(k, v) for k, v in comparison.items() if isinstance(v, dict) and "ratio" in v]
    if not metrics:
        return
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 4), squeeze=False)
    for ax, (name, values) in zip(axes[0], metrics):
        labels = [k for k in values if k != "ratio"]
        ax.bar(labels, [values[k] or 0 for k in labels], color=[_color(k) for k in labels])
        ratio = values["ratio"]
        ax.set_title(f"{name}\n×{ratio:.1f}" if ratio else name, fontsize=10)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def draw_all(run_dir: Path, summary: dict[str, Any]) -> list[str]:
    runs = summary["runs"]
    made = []
    for name, draw in (("throughput.png", throughput), ("latency.png", latency_over_time),
                       ("spectrum.png", spectrum), ("queue.png", queue_and_lag)):
        draw(runs, run_dir / name)
        made.append(name)
    if len(runs) > 1:
        bars(summary["comparison"], run_dir / "paths.png")
        made.append("paths.png")
    return made
