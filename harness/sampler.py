"""The server's state through a run: queue depth, totals, RSS and loop lag, once a second.

The once-a-second cadence restarts at each phase group's start, so a rate spans
whole seconds of one phase; a sample is also taken as each group ends, and a
last one after the drain, so a chart's final point is the real final depth
rather than whatever the queue held up to a second before the load stopped.
The same thread prints the progress line (``harness.progress``).

Loop lag is the server's own figure (``loop.lag_max_ms_last_s`` of
``/v1/admin/queue``): the worst time its event loop was held during the last
*full* second of the server's clock, so each row records that second
(``lag_second``) beside the lag, and ``harness.cost`` assigns seconds, not
samples, to phase groups — a second read twice (at a boundary) counts once.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

from harness.progress import Progress
from harness.server import api


class Sampler(threading.Thread):
    """Once a second, at each boundary and once at the end: one row of server figures."""

    def __init__(self, url: str, token: str, rss: Callable[[], int],
                 progress: Progress) -> None:
        super().__init__(daemon=True)
        self.url, self.token, self.rss, self.progress = url, token, rss, progress
        self.rows: list[dict[str, Any]] = []
        self.phase = "setup"
        self._halt = threading.Event()
        self._wake = threading.Event()
        self._align_at: float | None = None

    def run(self) -> None:
        due = time.time()
        while not self._halt.is_set():
            woken = self._wake.wait(max(0.0, due - time.time()))
            if woken:  # by boundary() or stop(): sample now, then at the group's start
                self._wake.clear()
                align, self._align_at = self._align_at, None
                if self._halt.is_set():
                    break
                due = align or due
            else:  # on schedule: the next whole second after ``due`` not yet passed
                due += max(1, math.ceil(time.time() - due))
            self._sample()
        self._sample()  # after the drain: the state the run ended in

    def boundary(self, phase: str, start_at: float | None = None) -> None:
        """Label samples as ``phase`` from now; sample now, and at ``start_at`` if given.

        Samples then follow once a second from ``start_at`` (the wall time the
        group's generators start together), so each rate spans whole seconds of
        the phase, and a phase shorter than a second still falls in a span of its own.
        """
        self.phase = phase
        self._align_at = start_at
        self._wake.set()

    def stop(self) -> None:
        """Take the final sample and end the thread."""
        self._halt.set()
        self._wake.set()
        self.join(10)
        self.progress.close()

    def _sample(self) -> None:
        now = time.time()
        try:
            _, queue = api(self.url, "GET", "/v1/admin/queue", self.token, timeout=5)
        except OSError:
            queue = {}
        answered = time.time()  # the server read its clock closer to its answer than to ``now``
        totals = queue.get("throughput", {})
        lag = (queue.get("loop") or {}).get("lag_max_ms_last_s")
        row = {"wall": now, "phase": self.phase, "queue_depth": queue.get("depth"),
               "inflight": queue.get("inflight"), "enqueued": totals.get("enqueued"),
               "committed": totals.get("committed"), "rss_mb": self.rss() / 1e6,
               "loop_lag_ms": lag, "lag_second": int(answered) - 1 if lag is not None else None}
        # Rates are means since the last sample that read the counters: one that failed
        # (the server too busy to answer in time) widens the span instead of losing it.
        # Boundary samples make some spans short; they are kept (never merged or dropped)
        # so the spans tile the run and a phase shorter than a second is still seen.
        previous = next((r for r in reversed(self.rows) if r["enqueued"] is not None), None)
        if previous and row["enqueued"] is not None:
            span = max(1e-3, now - previous["wall"])
            row["accepted_per_s"] = (row["enqueued"] - previous["enqueued"]) / span
            row["committed_per_s"] = (row["committed"] - previous["committed"]) / span
        self.rows.append(row)
        self.progress.update(self.phase, row, now)
