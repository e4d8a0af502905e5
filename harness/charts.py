"""PNG charts drawn from a run's raw files (the only module that imports matplotlib).

Charts over time have one panel per run (a path, or "A naive" in a comparison),
each on its own time axis with its own phases shaded and named and a "drain"
band after the load: a dip is read against what the load was doing, and two
paths whose phases took different times are never forced onto one timeline.
Panel titles quote the report's headline figures, so chart and table agree.

Read at a glance: every time axis starts at 0, the run's start (nothing the
run did happened before it); a spike a few samples long does not flatten a
linear axis (``clip_top``: the axis stops above the rest, the spike is marked
at the top with its value); each phase has a line style and marker of its own
(``phase_styles``), the colour naming the path; and a phase with too few
requests for a spectrum is named in the legend as *no data*, not left out.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.transforms import blended_transform_factory

from harness import numfmt, thresholds
from harness.cost import lag_seconds
from harness.metrics import histogram_from
from harness.scenario import INGEST_KINDS
from server.config import NAIVE, PIPELINED

COLORS = {NAIVE: "#d62728", PIPELINED: "#1f77b4"}
# Runs of one path under several settings (--vary): shades of the path's colour.
VARIANT_SHADES = {NAIVE: ("#d62728", "#ff9896", "#8c1a1a", "#e377c2"),
                  PIPELINED: ("#1f77b4", "#17becf", "#0b3d63", "#9edae5")}
# One (line style, marker) per phase, in the order phases first appear; the colour says
# the path.  Eight pairs, no two alike, before the cycle repeats (a scenario has ≤ 7 phases).
# Eight phases each with a line style and a marker of its own (then they repeat).
STYLES: tuple[tuple[Any, str], ...] = (
    ("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"), ((0, (8, 2, 1, 2, 1, 2)), "v"),
    ((0, (1, 3)), "x"), ((0, (10, 3)), "P"), ((0, (4, 1, 1, 1)), "*"))
MIN_SPECTRUM_COUNT = 10  # fewer requests than this draw no spectrum: "no data"
BANDS = ("#ececec", "#dcdcdc")  # alternate so adjacent phase groups stay apart
DRAIN = "#fde9c8"
NAN = math.nan


def _color(label: str) -> str:
    """The colour of the path named in a run's label ("pipelined", "A naive",
    "pipelined QUEUE_FSYNC=everysec"); a variant's setting lightens it."""
    words = label.split(" ")
    path = next((w for w in words if w in COLORS), None)
    if path is None:
        return "#555555"
    if words[-1] == path:
        return COLORS[path]
    shades = VARIANT_SHADES[path]
    return shades[zlib.crc32(words[-1].encode()) % len(shades)]


@dataclass(frozen=True)
class Window:
    """A stretch of a run, in seconds since its start."""

    label: str
    start: float
    end: float
    drain: bool = False  # the wait for the queue to empty after the load


def phase_windows(run: dict[str, Any]) -> list[Window]:
    """One window per group of concurrent phases (they share a start), then the drain."""
    groups: dict[float, list[dict[str, Any]]] = {}
    for phase in run["phases"]:
        groups.setdefault(phase["start_wall"], []).append(phase)
    windows = []
    for start_wall, phases in sorted(groups.items()):
        start = start_wall - run["started"]
        end = start + max(p["generator"]["wall_s"] for p in phases)
        windows.append(Window("+".join(p["name"] for p in phases), start, end))
    if windows:
        start = max(w.end for w in windows)
        if run.get("drain_s"):  # a queue empty when the load stopped needs no band
            windows.append(Window("drain", start, start + run["drain_s"], drain=True))
        elif run.get("drain_s") is None and run.get("samples"):  # timed out: to the end
            windows.append(Window("drain (timed out)", start,
                                  run["samples"][-1]["wall"] - run["started"], drain=True))
    return windows


def _ingest_windows(run: dict[str, Any]) -> list[Window]:
    """When points were being sent: each ingest phase on its own."""
    return [Window(p["name"], p["start_wall"] - run["started"],
                   p["start_wall"] - run["started"] + p["generator"]["wall_s"])
            for p in run["phases"] if p["kind"] in INGEST_KINDS]


def _shade(ax: Any, run: dict[str, Any]) -> None:
    """Phase groups as grey bands named at their top-left, the drain as an amber band."""
    where = blended_transform_factory(ax.transData, ax.transAxes)
    for index, window in enumerate(phase_windows(run)):
        drain = window.drain
        ax.axvspan(window.start, max(window.end, window.start + 0.05), zorder=0, lw=0,
                   color=DRAIN if drain else BANDS[index % 2])
        # Phases are named at their start, the drain at its end: a phase too short to
        # see (a fast upload) and the drain right after it do not print over each other.
        ax.text(window.end if drain else window.start, 0.97, f" {window.label} ",
                transform=where, rotation=90, ha="right" if drain else "left", va="top",
                fontsize=7, color="#555555", zorder=1)


def _panels(runs: dict[str, dict], sharey: bool = False) -> tuple[Any, list[Any]]:
    # Time is not shared: a path that took minutes must not squash one that took seconds.
    fig, axes = plt.subplots(len(runs), 1, figsize=(9, 0.8 + 2.5 * len(runs)), sharey=sharey,
                             squeeze=False)
    panels = list(axes[:, 0])
    for ax, run in zip(panels, runs.values(), strict=True):
        _shade(ax, run)
        ax.set_xlabel("seconds since start", fontsize=8)
    return fig, panels


def _save(fig: Any, axes: list[Any], out: Path, outside: bool = False) -> None:
    """Legends (outside the plot when it is a timeline, so they hide no data), grid, file."""
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            if outside:
                ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                          frameon=False)
            else:
                ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def phase_styles(runs: dict[str, dict]) -> dict[str, tuple[str, str]]:
    """Each phase name's (line style, marker), the same in every panel and path."""
    names: list[str] = []
    for run in runs.values():
        names += [p["name"] for p in run["phases"] if p["name"] not in names]
    return {name: STYLES[index % len(STYLES)] for index, name in enumerate(names)}


def clip_top(values: list[float], weights: list[float] | None = None, *, share: float = 0.05,
             headroom: float = 1.2, spike: float = 3.0) -> float | None:
    """The top of a linear y axis that a spike does not flatten; None: no need to clip.

    The level the series stays under for all but ``share`` of its weight (its
    time: a step's length, a second's 1), ``q``; when the maximum is more than
    ``spike`` × ``q`` (the rest would fill less than a third of the axis), the
    axis stops at ``headroom`` × ``q`` and the points above are marked at the
    top with their value (``_mark_clipped``).  A spike shorter than ``share`` of
    the series (one upload's fraction of a second at 7,000 points/s among
    seconds of hundreds) no longer sets the scale; a series that is high for
    longer, or a peak less than 3× the rest, is drawn whole.
    """
    pairs = sorted((v, w) for v, w in zip(values, weights or [1.0] * len(values), strict=True)
                   if not math.isnan(v) and w > 0)
    if not pairs:
        return None
    total = sum(w for _, w in pairs)
    below, level = 0.0, pairs[-1][0]
    for value, weight in pairs:
        below += weight
        if below >= (1 - share) * total:
            level = value
            break
    top = pairs[-1][0]
    if level <= 0 or top <= spike * level:
        return None
    return headroom * level


def _mark_clipped(ax: Any, xs: list[float], ys: list[float], top: float, color: str
                  ) -> list[float]:
    """Points above ``top``: a marker at the top of the axis, labelled with their value
    (to its left, inside the plot); the values marked."""
    shown: list[float] = []
    for x, y in zip(xs, ys, strict=True):
        if math.isnan(y) or y <= top or y in shown:  # a step's two ends share one label
            continue
        shown.append(y)
        ax.plot([x], [top], marker="^", color=color, clip_on=False, zorder=4,
                markersize=7, linestyle="none")
        ax.annotate(f"{numfmt.rate(y)} ▲", (x, top), xytext=(-6, -11), ha="right",
                    textcoords="offset points", fontsize=7, color=color)
    return shown


def _steps(xs: list[float], ys: list[float]) -> tuple[list[float], list[float]]:
    """The (value, seconds) of each step of a step line drawn as [start, end] pairs."""
    values, weights = [], []
    for index in range(0, len(xs) - 1):
        start, end = xs[index], xs[index + 1]
        if not (math.isnan(start) or math.isnan(end)) and ys[index] == ys[index + 1]:
            values.append(ys[index])
            weights.append(end - start)
    return values, weights


def _from_zero(axes: list[Any]) -> None:
    """Every time axis starts at the run's start."""
    for ax in axes:
        ax.set_xlim(left=0)


def _number(value: Any) -> str:
    return numfmt.MISSING if value is None else numfmt.rate(value)


def _covers(start: float, end: float, window: Window) -> bool:
    """Whether the span [start, end] lies mostly in ``window``, or holds all of it.

    The first keeps out a span that only grazes a phase's end (its mean would be
    a false drop); the second keeps a phase shorter than a sample (a fast upload).
    """
    overlap = min(end, window.end) - max(start, window.start)
    return overlap > 0 and overlap >= 0.5 * min(end - start, window.end - window.start)


def _accepted(run: dict[str, Any]) -> tuple[list[float], list[float]]:
    """Accepted points/s as steps over the span each sample averages.

    A span outside every ingest phase is left out (the line breaks): between
    phases nothing is sent, and a drop to zero there would read as an outage.
    Steps, not a line through sample points, so a stretch the sampler could not
    see is drawn flat at the mean it measured, not as a slope it never saw.
    """
    ingest = _ingest_windows(run)
    xs: list[float] = []
    ys: list[float] = []
    counted = [r for r in run["samples"] if r.get("enqueued") is not None]
    for previous, row in pairwise(counted):  # as the sampler measured: since the last count
        if row.get("accepted_per_s") is None:
            continue
        start, end = previous["wall"] - run["started"], row["wall"] - run["started"]
        if any(_covers(start, end, w) for w in ingest):
            if xs and start - xs[-1] > 0.3:  # not the next step: break the line
                xs.append(NAN)
                ys.append(NAN)
            xs += [start, end]
            ys += [row["accepted_per_s"]] * 2
    return xs, ys


def _committed(run: dict[str, Any]) -> tuple[list[float], list[float]]:
    """Rows committed in each second, with the seconds that committed none as real zeros."""
    counts = {int(s): n for s, n in run.get("server", {}).get("committed_per_second", [])}
    if not counts:
        return [], []
    seconds = range(min(counts), max(counts) + 1)
    # A second the run started in is drawn from the start, not before it.
    return ([max(0.0, s + 0.5 - run["started"]) for s in seconds],
            [counts.get(s, 0) for s in seconds])


def throughput(runs: dict[str, dict], out: Path, heads: dict[str, Any]) -> None:
    fig, axes = _panels(runs)
    for ax, (label, run) in zip(axes, runs.items(), strict=True):
        accepted, committed = _accepted(run), _committed(run)
        color = _color(label)
        ax.plot(*accepted, color=color, label="accepted (queue counter)")
        ax.plot(*committed, color=color, linestyle="--", alpha=0.8,
                label="committed (rows per second)")
        steps, lengths = _steps(*accepted)
        top = clip_top(steps + committed[1], lengths + [1.0] * len(committed[1]))
        clipped = ""
        if top is not None:
            spikes = (_mark_clipped(ax, *accepted, top, color)
                      + _mark_clipped(ax, *committed, top, color))
            ax.set_ylim(0, top)
            clipped = f"\naxis clipped: ▲ a spike to {numfmt.rate(max(spikes))} points/s"
        else:
            ax.set_ylim(bottom=0)
        head = heads.get(label, {})
        ax.set_title(f"{label}: accepted {_number(head.get('accepted points/s'))} points/s, "
                     f"committed {_number(head.get('committed points/s'))} points/s"
                     + clipped, fontsize=9)
        ax.set_ylabel("points / s")
    _from_zero(axes)
    fig.suptitle("Throughput over time", fontsize=11)
    _save(fig, axes, out, outside=True)


def _lag_points(run: dict[str, Any]) -> list[tuple[float, float]]:
    """(mid-second since start, loop lag ms) per second the sampler saw; zeros left out
    (the axis is logarithmic: a loop never held has nothing to draw), and so is a
    second that ended before the run began (the first sample reports the last full
    second, before it); the second the run began in is drawn from its start."""
    started = run["started"]
    lags = lag_seconds(run.get("samples", []))
    return [(max(0.0, second + 0.5 - started), lag) for second, lag in lags.items()
            if lag and second + 1 > started]


def latency_over_time(runs: dict[str, dict], out: Path, heads: dict[str, Any]) -> None:
    """p99 per second on a log axis: a spike there keeps the rest readable, so no clipping."""
    fig, axes = _panels(runs, sharey=True)
    styles = phase_styles(runs)
    for ax, (label, run) in zip(axes, runs.items(), strict=True):
        for phase in run["phases"]:
            offset = phase["start_wall"] - run["started"]
            end = phase["generator"]["wall_s"]  # a phase's last second may be a short one
            linestyle, marker = styles[phase["name"]]
            ax.plot([offset + (s["second"] + min(s["second"] + 1, end)) / 2
                     for s in phase["seconds"]],
                    [s["p99_ms"] for s in phase["seconds"]], color=_color(label),
                    linestyle=linestyle, marker=marker, markersize=4,
                    label=f"{phase['name']} p99")
        # The server's own loop lag, on the same ms axis: a p99 that tracks it was
        # spent waiting for the loop, not for the stores.
        lags = sorted(_lag_points(run))
        if lags:
            ax.plot([x for x, _ in lags], [y for _, y in lags], color="#555555",
                    linewidth=1, alpha=0.8, label="server loop held (max per s)")
        worst = heads.get(label, {}).get("worst phase p99 latency (ms)")
        lag_max = (run.get("server", {}).get("loop_lag_ms") or {}).get("max")
        ax.set_title(f"{label}: worst phase p99 {numfmt.time(worst)} ms"
                     + (f", loop held up to {numfmt.time(lag_max)} ms" if lag_max else ""),
                     fontsize=9)
        ax.set_ylabel("ms")
        ax.set_yscale("log")
    _from_zero(axes)
    fig.suptitle("Latency over time, p99 per second (coordinated-omission corrected), "
                 "and the server's loop lag", fontsize=11)
    _save(fig, axes, out, outside=True)


def queue_and_lag(runs: dict[str, dict], out: Path, heads: dict[str, Any]) -> None:
    """Queue depth per run with server RSS beside it, each on one scale for every run."""
    fig, axes = _panels(runs, sharey=True)  # one queue scale: backlogs compare at a glance
    peak_rss = max((r["rss_mb"] for run in runs.values() for r in run["samples"]), default=0)
    for ax, (label, run) in zip(axes, runs.items(), strict=True):
        rows = [r for r in run["samples"] if r.get("queue_depth") is not None]
        # Drawn over the axis (zorder, no clipping) so an empty queue shows as a line on it.
        ax.plot([r["wall"] - run["started"] for r in rows], [r["queue_depth"] for r in rows],
                color=_color(label), marker=".", markersize=3, zorder=3, clip_on=False)
        ax.set_ylabel("queue depth (points)", color=_color(label))
        rss = ax.twinx()  # labelled by its axis, not a legend that could cover the queue
        rss.plot([r["wall"] - run["started"] for r in run["samples"]],
                 [r["rss_mb"] for r in run["samples"]], color="#777777", linestyle=":")
        rss.set_ylabel("server RSS, dotted (MB)", color="#777777", fontsize=8)
        rss.set_ylim(0, peak_rss * 1.1 or 1)
        lag = run.get("server", {}).get("e2e_lag_s", {})
        drained = run.get("drain_s")
        drain = ("not drained by the timeout" if drained is None else
                 f"drained in {numfmt.time(drained)} s")
        peak = max((r["queue_depth"] for r in rows), default=0)
        ax.set_title(
            f"{label}: queue peak {numfmt.count(peak)}, {drain}"
            f" · e2e lag p50 {numfmt.time(lag.get('p50'))} s,"
            f" p99 {numfmt.time(lag.get('p99'))} s"
            f" · peak RSS {numfmt.size(heads.get(label, {}).get('peak RSS (MB)'))} MB",
            fontsize=9)
    axes[0].set_ylim(bottom=0)  # after every panel is drawn: the shared scale fits them all
    _from_zero(axes)
    fig.suptitle("Queue depth and server memory", fontsize=11)
    _save(fig, axes, out)


def spectrum_points(hist: Any) -> tuple[list[float], list[float]]:
    """(1 / (1 - p), latency ms) from the first percentile above 0 up to the last below 100.

    The 0% point is the single fastest request, not a percentile of anything: drawn,
    it plunged every curve at the left edge.  The spectrum starts at the first
    step of the iterator instead (10% with 5 steps per halving).
    """
    xs, ys = [], []
    for item in hist.get_percentile_iterator(5):
        pct = item.percentile_level_iterated_to
        if pct >= 100:
            break
        if pct <= 0:
            continue
        xs.append(1 / (1 - pct / 100))
        ys.append(item.value_iterated_to / 1000)
    return xs, ys


def spectrum(runs: dict[str, dict], out: Path) -> list[str]:
    """Percentile spectra on a log 1/(1-p) axis, HdrHistogram-plotter style; the legend."""
    fig, ax = plt.subplots(figsize=(10, 4.8))
    styles = phase_styles(runs)
    right = 100.0  # the axis reaches 99% at least, and the highest percentile drawn
    for label, run in runs.items():
        for phase in run["phases"]:
            hist = histogram_from(phase)
            linestyle, marker = styles[phase["name"]]
            count = hist.get_total_count()
            if count < MIN_SPECTRUM_COUNT:  # a spectrum of a few requests says nothing
                requests = f"{count} request" + ("" if count == 1 else "s")
                ax.plot([], [], color=_color(label), linestyle="none", marker=marker,
                        fillstyle="none", label=f"{label} {phase['name']}: no data ({requests})")
                continue
            xs, ys = spectrum_points(hist)
            right = max([right, *xs])
            # A comparison's second run (labels "B …") in hollow markers, paler: the
            # same path and phase in both runs must not look alike.
            second = label.startswith("B ")
            ax.plot(xs, ys, color=_color(label), linestyle=linestyle, marker=marker,
                    markersize=5 if second else 4, markevery=max(1, len(xs) // 8),
                    fillstyle="none" if second else "full", alpha=0.6 if second else 1.0,
                    label=f"{label} {phase['name']}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ticks = [(x, name) for x, name in ((2, "50%"), (10, "90%"), (100, "99%"),
                                        (1000, "99.9%"), (10000, "99.99%"), (1e5, "99.999%"))
             if x <= right * 1.5]
    ax.set_xticks([1 / 0.9] + [x for x, _ in ticks], ["10%"] + [n for _, n in ticks])
    ax.set_xlim(1 / 0.9, right * 1.5)
    ax.set(xlabel="percentile", ylabel="latency (ms)",
           title=f"Latency by percentile (phases under {MIN_SPECTRUM_COUNT} requests: no data)")
    legend = ax.get_legend_handles_labels()[1]
    _save(fig, [ax], out, outside=True)
    return legend


def bars(comparison: dict[str, Any], out: Path, notes: dict[str, str | None] | None = None
         ) -> bool:
    """Each path's throughputs side by side with the ratio; False when there is no pair.

    ``notes``: per metric, why its ratio is not comparable with the bars (or None)."""
    metrics = [(k, v) for k, v in comparison.items() if isinstance(v, dict) and "ratio" in v]
    if not metrics:
        return False
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 4), squeeze=False)
    for ax, (name, values) in zip(axes[0], metrics, strict=True):
        labels = [k for k in values if k != "ratio"]
        ax.bar(labels, [values[k] or 0 for k in labels], color=[_color(k) for k in labels])
        ratio = values["ratio"]
        title = f"{name}\n{PIPELINED} ÷ {NAIVE} = {numfmt.ratio(ratio)}" if ratio else name
        if ratio and (notes or {}).get(name):
            title += "\nnot comparable with the bars"
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return True


def draw_all(run_dir: Path, summary: dict[str, Any]) -> list[str]:
    """Every chart for ``summary["runs"]``; the names of the files written."""
    runs = summary["runs"]
    heads = summary.get("comparison", {}).get("headline", {})
    throughput(runs, run_dir / "throughput.png", heads)
    latency_over_time(runs, run_dir / "latency.png", heads)
    spectrum(runs, run_dir / "spectrum.png")
    queue_and_lag(runs, run_dir / "queue.png", heads)
    made = ["throughput.png", "latency.png", "spectrum.png", "queue.png"]
    comparison = summary.get("comparison", {})
    notes = {metric: thresholds.ratio_not_comparable(summary, metric)
             for metric in ("accepted points/s", "committed points/s") if metric in comparison}
    if len(runs) > 1 and bars(comparison, run_dir / "paths.png", notes):
        made.append("paths.png")
    return made
