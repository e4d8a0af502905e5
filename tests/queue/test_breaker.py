"""The per-store circuit breaker: closed → open → half-open → closed."""

from __future__ import annotations

import asyncio

from server.queue.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from server.supervisor import StopSignal


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
    assert await asyncio.wait_for(first, 1) is True  # the probe
    await asyncio.sleep(0.05)  # five cool-downs: the second would be through by now
    assert not second.done() and breaker.state == HALF_OPEN  # waits while the probe is out
    breaker.record_success()
    assert await asyncio.wait_for(second, 1) is False  # closed: no probe needed


def test_cool_down_doubles_up_to_its_maximum() -> None:
    breaker = CircuitBreaker("pg", base_s=0.05, max_s=1.0)
    for _ in range(10):
        breaker.record_failure("down")
    assert breaker.state == OPEN and breaker.failures == 10
    assert breaker.as_dict()["times_opened"] == 1  # one outage, however many failures


async def test_a_stop_ends_a_wait_for_the_cool_down_at_once() -> None:
    breaker = CircuitBreaker("pg", base_s=3600, max_s=3600)
    breaker.record_failure("down")
    stop = StopSignal()
    waiting = asyncio.ensure_future(breaker.wait_ready(stop))
    await asyncio.sleep(0)  # it is waiting out the hour
    stop._raise()
    assert await asyncio.wait_for(waiting, 1) is False  # no probe: it is stopping
