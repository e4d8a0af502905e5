"""Waits that fail loudly: poll a predicate, raise naming what was awaited."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def _failed(what: str, timeout_s: float, last: object) -> AssertionError:
    return AssertionError(f"timed out after {timeout_s:g}s waiting for {what} "
                          f"(last seen: {last!r})")


async def until(predicate: Callable[[], T | Awaitable[T]], what: str,
                timeout_s: float = 10.0, interval_s: float = 0.01) -> T:
    """Poll ``predicate`` (sync or async) until it returns something truthy; return it.

    Raises ``AssertionError`` naming ``what`` and the last value when ``timeout_s``
    passes first.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            raise _failed(what, timeout_s, value)
        await asyncio.sleep(interval_s)


def until_sync(predicate: Callable[[], T], what: str, timeout_s: float = 30.0,
               interval_s: float = 0.05) -> T:
    """``until`` for a test that blocks (one driving a subprocess): same contract."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise _failed(what, timeout_s, value)
        time.sleep(interval_s)


