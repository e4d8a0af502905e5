"""What the time charts draw: phases as bands, accepted only while points are sent, real zeros."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

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
