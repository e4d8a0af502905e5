"""The per-store circuit breaker: closed → open → half-open → closed."""

from __future__ import annotations

import asyncio

from server.queue.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker


def test_breaker_opens_on_failure_and_closes_after_a_good_probe() -> None:
    breaker = CircuitBreaker("pg", base_s=10, max_s=10)
    assert breaker.state == CLOSED
    breaker.record_failure("down")
    assert breaker.state == OPEN and breaker.as_dict()["last_error"] == "down"
    breaker._open_until = 0  # the cool-down has passed
    assert breaker.state == HALF_OPEN
    breaker.record_success()
    assert breaker.state == CLOSED and breaker.as_dict()["times_opened"] == 1


async def test_only_one_caller_probes_a_half_open_breaker() -> None:
    breaker = CircuitBreaker("pg", base_s=0.01, max_s=0.01)
    breaker.record_failure("down")
    first = asyncio.ensure_future(breaker.wait_ready())
    second = asyncio.ensure_future(breaker.wait_ready())
    await asyncio.wait_for(first, 1)  # the probe
    await asyncio.sleep(0.05)
    assert not second.done()  # waits while the probe is out
    breaker.record_success()
    await asyncio.wait_for(second, 1)


def test_cool_down_doubles_up_to_its_maximum() -> None:
    breaker = CircuitBreaker("pg", base_s=0.05, max_s=1.0)
    for _ in range(10):
        breaker.record_failure("down")
    assert breaker.state == OPEN and breaker.failures == 10
    assert breaker.as_dict()["times_opened"] == 1  # one outage, however many failures
