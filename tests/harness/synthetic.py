"""Small summary.json files shaped as ``run.py bench`` writes them, for report tests.

A real bench takes tens of seconds (tests/harness/test_bench.py runs one); the
report's reading rules — formats, comparability, ratio notes — only need the
figures, so these are built by hand, with real HdrHistogram encodings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from harness.metrics import new_histogram, summarize

STARTED = 1_000.0


def _hist(low_us: int, high_us: int, step_us: int) -> Any:
    hist = new_histogram()
    for us in range(low_us, high_us, step_us):
        hist.record_value(us)
    return hist


def phase(name: str, kind: str, start: float, wall_s: float, *, sent: int, points: int,
          latency_us: tuple[int, int, int] = (1000, 50_000, 1000)) -> dict[str, Any]:
    hist = _hist(*latency_us)
    encoded = hist.encode().decode()
    return {
        "name": name, "kind": kind, "start_wall": STARTED + start, "intended": sent,
        "sent": sent, "ok": sent, "errors": 0, "dropped": 0, "late": 0,
        "points_ok": points, "statuses": {"202": sent}, "success": 1.0,
        "rate": round(sent / wall_s, 2), "points_per_s": round(points / wall_s, 1),
        "latency_ms": summarize(hist), "service_ms": summarize(hist),
        "latency_hist": encoded, "service_hist": encoded,
        "generator": {"wall_s": wall_s, "cpu_s": 0.05, "cpu_fraction": 0.025,
                      "max_send_lag_ms": 1.0, "fell_behind": False},
        "seconds": [{"second": s, "sent": sent // int(wall_s), "ok": sent // int(wall_s),
                     "errors": 0, "points": points // int(wall_s), "p50_ms": 5.0,
                     "p99_ms": 20.0 + s} for s in range(int(wall_s))],
    }


def run(path: str, accepted_per_s: float) -> dict[str, Any]:
    """A path's run: 2 s of batches at ``accepted_per_s`` points/s, then 1 s of health."""
    points = int(accepted_per_s * 2)
    samples = [{"wall": STARTED + t, "phase": "x", "queue_depth": 0, "rss_mb": 60.0,
                "enqueued": int(accepted_per_s * max(0, t - 1)),
                "accepted_per_s": accepted_per_s if 1 < t <= 3 else 0.0,
                "loop_lag_ms": 2.0, "lag_second": int(STARTED) + t - 1} for t in range(6)]
    return {
        "path": path, "server_env": {}, "url": "http://127.0.0.1:1", "started": STARTED,
        "generator_ceiling_rps": 4321.0, "drain_s": 0.5, "samples": samples,
        "phases": [phase("batches", "batch", 1, 2, sent=points // 100, points=points),
                   phase("health", "health", 3, 1, sent=100, points=0)],
        "server": {"committed": points, "committed_points_per_s": accepted_per_s * 0.9,
                   "e2e_lag_s": {"p50": 0.05, "p99": 0.25},
                   "committed_per_second": [[STARTED + 1, points // 2],
                                            [STARTED + 2, points // 2]],
                   "dead_letters": {}, "loop_lag_ms": {"max": 2.0, "p99": 2.0}},
        "cost": None, "peak_rss_mb": 61.25,
    }


def summary(*, scenario: str = "smoke", scale: float = 1.0, seed: int = 42,
            baseline: float | None = 4000.0, paths: tuple[str, ...] = ("naive", "pipelined"),
            commit: str = "a" * 40, thresholds: tuple[str, ...] = ("all.success > 99%",),
            rates: dict[str, float] | None = None) -> dict[str, Any]:
    rates = rates or {"naive": 500.0, "pipelined": 1500.0}
    return {
        "scenario": scenario, "description": "synthetic", "seed": seed, "scale": scale,
        "baseline_scale": 1.0, "paths": list(paths), "created": "20260101T000000Z",
        "git_commit": commit, "environment": {"cpus": 2, "python": "3.11"},
        "baseline": ({"bare_post_rps": baseline, "connections": 100, "seconds": 3.0}
                     if baseline else None),
        "scenario_definition": {"thresholds": [{"text": t} for t in thresholds],
                                "reference_baseline": None},
        "runs": {p: run(p, rates[p]) for p in paths},
    }


def write(run_dir: Path, data: dict[str, Any]) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").write_bytes(orjson.dumps(data))
    return run_dir
