"""How long the one event loop is held: a timer that measures its own lateness.

Everything this process does — HTTP, enqueues, workers, the folder — shares one
event loop, so a callback that runs 50 ms delays every other request by 50 ms
(``/health`` included).  The monitor sleeps ``INTERVAL_S`` over and over and
records how late it wakes: the lateness is at least the longest slice some
callback held the loop (plus the loop's own scheduling noise).  Kept per second
for the last minute, so the admin view and the harness can read the worst
slice of each second, and in the ``points_event_loop_lag_seconds`` histogram of
``/metrics`` (``server/metrics.py``; ``ops/exporter.py`` reads it).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

from server import metrics
from server.supervisor import StopSignal

INTERVAL_S = 0.005


class LoopMonitor:
    def __init__(self) -> None:
        self._by_second: deque[tuple[int, float]] = deque(maxlen=60)  # (second, max lag)

    def record(self, lag_s: float, now: float) -> None:
        second = int(now)
        if self._by_second and self._by_second[-1][0] == second:
            if lag_s > self._by_second[-1][1]:
                self._by_second[-1] = (second, lag_s)
        else:
            self._by_second.append((second, lag_s))
        metrics.LOOP_LAG.observe(lag_s)

    async def run(self, stop: StopSignal) -> None:
        """Measure until ``stop`` (a supervised background task).  A plain sleep, not
        ``stop.pause``: the lateness of a bare timer is the measurement."""
        while not stop.requested:
            start = time.perf_counter()
            await asyncio.sleep(INTERVAL_S)
            now = time.perf_counter()
            self.record(max(0.0, now - start - INTERVAL_S), time.time())

    def describe(self) -> dict[str, Any]:
        """The worst lag of the last full second and of the last minute, in ms."""
        current = int(time.time())
        last = [lag for second, lag in self._by_second if second == current - 1]
        return {"lag_max_ms_last_s": round(last[0] * 1000, 2) if last else 0.0,
                "lag_max_ms_60s": round(max((lag for _, lag in self._by_second),
                                            default=0.0) * 1000, 2)}
