"""What the time charts draw: phases as bands, accepted only while points are sent, real zeros."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from harness import charts
from harness.metrics import new_histogram


def _run(drain_s: float | None = 2.0) -> dict[str, Any]:
    """A run that starts at wall 1000: ingest at 1–3 s, health at 4–5 s, then the drain."""
    def phase(name: str, kind: str, start: float, wall_s: float) -> dict[str, Any]:
        hist = new_histogram()
        for us in range(1000, 50_000, 1000):
            hist.record_value(us)
        return {"name": name, "kind": kind, "start_wall": 1000 + start,
                "generator": {"wall_s": wall_s}, "latency_hist": hist.encode().decode(),
                "seconds": [{"second": s, "p99_ms": 10.0 + s} for s in range(int(wall_s))]}

    samples = [{"wall": 1000 + t, "phase": "x", "queue_depth": 0, "rss_mb": 50.0,
                "enqueued": 100 * t, "accepted_per_s": 100.0 if t else None}
               for t in range(8)]
    return {"started": 1000.0, "drain_s": drain_s, "samples": samples,
            "phases": [phase("points", "batch", 1, 2), phase("probe", "health", 4, 1)],
            "server": {"committed_per_second": [[1001, 50], [1002, 70], [1005, 30]]}}


def test_phase_windows_name_each_group_then_the_drain() -> None:
    windows = charts.phase_windows(_run())
    assert [(w.label, w.start, w.end, w.drain) for w in windows] == [
        ("points", 1, 3, False), ("probe", 4, 5, False), ("drain", 5, 7, True)]
    assert charts.phase_windows(_run(drain_s=None))[-1].label == "drain (timed out)"


def test_accepted_is_drawn_only_while_an_ingest_phase_runs() -> None:
    xs, ys = charts._accepted(_run())
    drawn = [(x, y) for x, y in zip(xs, ys, strict=True) if not math.isnan(x)]
    assert drawn == [(1, 100), (2, 100), (2, 100), (3, 100)]  # steps over 1–2 s and 2–3 s


def test_committed_seconds_without_rows_are_real_zeros() -> None:
    xs, ys = charts._committed(_run())
    assert xs == [1.5, 2.5, 3.5, 4.5, 5.5] and ys == [50, 70, 0, 0, 30]


def test_every_chart_is_drawn_from_a_summary(tmp_path: Path) -> None:
    runs = {"naive": _run(), "pipelined": _run(drain_s=None)}
    made = charts.draw_all(tmp_path, {"runs": runs, "comparison": {}})
    assert made == ["throughput.png", "latency.png", "spectrum.png", "queue.png"]
    assert all((tmp_path / name).stat().st_size > 0 for name in made)


def test_a_short_spike_is_clipped_and_a_long_high_stretch_is_not() -> None:
    # 0.2 s at 7,000 points/s among 12 s of a few hundred: the axis stops above the rest
    values, weights = [200.0, 500.0, 7000.0, 1400.0, 300.0], [2.0, 2.0, 0.2, 1.0, 7.0]
    assert charts.clip_top(values, weights) == pytest.approx(1.2 * 1400)
    assert charts.clip_top([200.0, 500.0, 7000.0], [2.0, 2.0, 3.0]) is None  # 3 s: real
    assert charts.clip_top([100.0, 120.0, 150.0]) is None  # nothing stands out
    assert charts.clip_top([]) is None


def test_spectrum_starts_at_the_first_percentile_not_the_fastest_request() -> None:
    hist = new_histogram()
    hist.record_value(1)  # one request "answered" in 1 µs: the old 10⁻³ ms plunge
    for us in range(1000, 50_000, 100):
        hist.record_value(us)
    xs, ys = charts.spectrum_points(hist)
    assert xs[0] == pytest.approx(1 / 0.9)  # 10%: the iterator's first step past 0%
    assert min(ys) >= 1.0 and xs == sorted(xs) and max(xs) < 10_000


def test_every_phase_has_its_own_style_and_a_phase_without_data_is_named(
        tmp_path: Path) -> None:
    runs = {"naive": _run(), "pipelined": _run()}
    few = new_histogram()
    for us in (1000, 2000, 3000):
        few.record_value(us)
    for run in runs.values():
        run["phases"].append({**run["phases"][1], "name": "upload",
                              "latency_hist": few.encode().decode()})
    styles = charts.phase_styles(runs)
    assert list(styles) == ["points", "probe", "upload"]
    assert len(set(styles.values())) == 3  # line style and marker, no two phases alike
    legend = charts.spectrum(runs, tmp_path / "spectrum.png")
    assert "naive upload: no data (3 requests)" in legend
    assert "pipelined points" in legend and "pipelined probe" in legend


def test_time_series_start_at_the_runs_start_never_before() -> None:
    run = _run()
    run["started"] = 1000.7  # mid-second: the second it started in began before it
    run["server"]["committed_per_second"] = [[1000, 20], [1001, 50]]
    run["samples"][0]["lag_second"] = 999  # the first sample reports the second before
    run["samples"][0]["loop_lag_ms"] = 12.0
    run["samples"][1]["lag_second"] = 1000
    run["samples"][1]["loop_lag_ms"] = 3.0
    xs, _ = charts._committed(run)
    assert xs == [0.0, pytest.approx(0.8)]
    lags = charts._lag_points(run)
    assert lags[0] == (0.0, 3.0) and 12.0 not in [lag for _, lag in lags]  # second 999: before


def test_a_peak_that_leaves_the_rest_readable_is_not_clipped() -> None:
    # a second at 1,456 among seconds of ~500: the rest fills a third of the axis or more
    assert charts.clip_top([500.0, 1456.0, 550.0, 600.0], [10.0, 1.0, 10.0, 10.0]) is None
