"""What a phase measured: HDR histograms, counters and a per-second series.

Latency is recorded twice per request, as wrk2 ``-U`` and pgbench's schedule lag
do: from the *intended* send time (coordinated-omission corrected: a stalled
server delays the requests queued behind it, and that delay counts) and as pure
service time (send → response).  Histograms keep 3 significant digits from 1 µs
to 10 min and travel as base64 HdrHistogram encodings so reports can be
re-rendered without re-running.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

LOWEST_US, HIGHEST_US, DIGITS = 1, 600_000_000, 3
PERCENTILES = (50, 90, 95, 99, 99.9)


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, DIGITS)


def summarize(hist: HdrHistogram) -> dict[str, float]:
    """Percentiles in milliseconds."""
    if hist.get_total_count() == 0:
        return {"count": 0}
    out: dict[str, float] = {"count": hist.get_total_count()}
    for p in PERCENTILES:
        out[f"p{p:g}"] = hist.get_value_at_percentile(p) / 1000
    out["max"] = hist.get_max_value() / 1000
    out["mean"] = round(hist.get_mean_value() / 1000, 3)
    return out


@dataclass
class Second:
    sent: int = 0
    ok: int = 0
    errors: int = 0
    points: int = 0
    latency: HdrHistogram = field(default_factory=new_histogram)


class PhaseRecorder:
    def __init__(self, name: str, kind: str, warmup_s: float, live: Any = None) -> None:
        self.name, self.kind, self.warmup_s = name, kind, warmup_s
        self.live = live  # shared [answered, errors] for the runner's progress line, or None
        self.latency = new_histogram()
        self.service = new_histogram()
        self.statuses: dict[int, int] = defaultdict(int)
        self.intended = 0
        self.sent = 0
        self.ok = 0
        self.errors = 0
        self.dropped = 0
        self.points_ok = 0
        self.late = 0  # sent more than 10 ms after their intended time
        self.max_send_lag_s = 0.0
        self.seconds: dict[int, Second] = defaultdict(Second)

    def record(self, offset_s: float, latency_s: float, service_s: float, status: int,
               success: bool, points: int) -> None:
        second = self.seconds[int(offset_s)]
        if self.live is not None:  # unlocked: a display counter may lose an update
            self.live[0] += 1
            self.live[1] += not success
        second.sent += 1
        self.sent += 1
        self.statuses[status] += 1
        if success:
            self.ok += 1
            second.ok += 1
            self.points_ok += points
            second.points += points
        else:
            self.errors += 1
            second.errors += 1
        latency_us = max(LOWEST_US, min(HIGHEST_US, int(latency_s * 1e6)))
        second.latency.record_value(latency_us)
        if offset_s >= self.warmup_s:
            self.latency.record_value(latency_us)
            self.service.record_value(
                max(LOWEST_US, min(HIGHEST_US, int(service_s * 1e6))))

    def drop(self, offset_s: float, waited_s: float) -> None:
        """A request that could not be sent in time: an error, and its wait is latency."""
        self.dropped += 1
        second = self.seconds[int(offset_s)]
        second.errors += 1
        if self.live is not None:
            self.live[1] += 1
        latency_us = max(LOWEST_US, min(HIGHEST_US, int(waited_s * 1e6)))
        second.latency.record_value(latency_us)
        if offset_s >= self.warmup_s:
            self.latency.record_value(latency_us)

    def result(self, wall_s: float, cpu_s: float) -> dict[str, Any]:
        behind = self.dropped > 0 or self.max_send_lag_s > 0.1
        return {
            "name": self.name, "kind": self.kind, "intended": self.intended,
            "sent": self.sent, "ok": self.ok, "errors": self.errors, "dropped": self.dropped,
            "late": self.late, "points_ok": self.points_ok,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            # Dropped requests count against success: they were due and never answered.
            "success": (round(self.ok / (self.sent + self.dropped), 6)
                        if self.sent + self.dropped else 0.0),
            "rate": round(self.sent / wall_s, 2) if wall_s else 0.0,
            "points_per_s": round(self.points_ok / wall_s, 1) if wall_s else 0.0,
            "latency_ms": summarize(self.latency), "service_ms": summarize(self.service),
            "latency_hist": self.latency.encode().decode(),  # base64 HdrHistogram
            "service_hist": self.service.encode().decode(),
            "generator": {"wall_s": round(wall_s, 3), "cpu_s": round(cpu_s, 3),
                          "cpu_fraction": round(cpu_s / wall_s, 3) if wall_s else 0.0,
                          "max_send_lag_ms": round(self.max_send_lag_s * 1000, 2),
                          "fell_behind": behind},
            "seconds": [
                {"second": s, "sent": v.sent, "ok": v.ok, "errors": v.errors,
                 "points": v.points, "p50_ms": v.latency.get_value_at_percentile(50) / 1000,
                 "p99_ms": v.latency.get_value_at_percentile(99) / 1000}
                for s, v in sorted(self.seconds.items())],
        }


def histogram_from(result: dict[str, Any], which: str = "latency_hist") -> HdrHistogram:
    return HdrHistogram.decode(result[which].encode())
