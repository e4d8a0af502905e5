"""Settlement decisions: retry timing is exponential backoff with full jitter."""

from __future__ import annotations

import random

from server.queue.settlement import backoff_s


def test_retry_delays_stay_within_the_backoff_bounds() -> None:
    random.seed(3)
    for attempt in range(12):
        bound = min(60.0, 0.5 * 2**attempt)
        delays = [backoff_s(attempt, 0.5, 60.0) for _ in range(500)]
        assert all(0 <= d <= bound for d in delays)
        # Full jitter spreads over the whole window, not just near its top.
        assert min(delays) < bound * 0.1 and max(delays) > bound * 0.9
