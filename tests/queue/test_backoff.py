"""Retry timing: exponential backoff with full jitter, within its bounds."""

from __future__ import annotations

import random

from server.queue.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from server.queue.settlement import backoff_s


def test_retry_delays_stay_within_the_backoff_bounds() -> None:
    random.seed(3)
    for attempt in range(12):
        bound = min(60.0, 0.5 * 2**attempt)
        delays = [backoff_s(attempt, 0.5, 60.0) for _ in range(500)]
        assert all(0 <= d <= bound for d in delays)
        # Full jitter spreads over the whole window, not just near its top.
        assert min(delays) < bound * 0.1 and max(delays) > bound * 0.9


def test_breaker_opens_on_failure_and_closes_after_a_good_probe() -> None:
    breaker = CircuitBreaker("pg", base_s=10, max_s=10)
    assert breaker.state == CLOSED
    breaker.record_failure("down")
    assert breaker.state == OPEN and breaker.as_dict()["last_error"] == "down"
    breaker._open_until = 0  # the cool-down has passed
    assert breaker.state == HALF_OPEN
    breaker.record_success()
    assert breaker.state == CLOSED and breaker.as_dict()["times_opened"] == 1
