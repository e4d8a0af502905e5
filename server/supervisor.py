"""Supervised background tasks: one that dies is seen, logged once, counted, restarted.

The queue workers, the reclaimer and the standings folder run as long-lived
tasks in the server's event loop.  Each loop handles the failures it expects
(a store outage) itself; anything else ends the task, and a task that ends by
an exception must never vanish silently (a bare ``create_task`` would keep its
exception until garbage collection; ``gather(return_exceptions=True)`` would
swallow it).  The supervisor, like arq's worker, keeps its tasks in a dict and
reaps each with ``.result()`` semantics: the exception is logged once with its
traceback, a restart counter grows, and the task is started again after an
exponential backoff (so a task that crashes at once does not spin).  While a
task is down, ``ok`` is False and ``/ready`` says so.

Shutdown follows arq: ``stop`` raises the ``StopSignal`` the loops watch (their
pauses end at once), waits for the tasks (bounded), then cancels what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from server import metrics

log = logging.getLogger(__name__)


class StopSignal:
    """Raised by the supervisor's ``stop``: its loops end on it, and their pauses between
    rounds are cut short (a loop that sleeps 0.25 s would otherwise hold every stop)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    async def pause(self, seconds: float) -> None:
        """Wait ``seconds``, or less if the stop comes first."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), seconds)

    def _raise(self) -> None:
        self._event.set()

    def _lower(self) -> None:
        self._event.clear()


@dataclass
class _Supervised:
    name: str
    factory: Callable[[], Awaitable[None]]
    task: asyncio.Task | None = None
    running: bool = False
    restarts: int = 0
    down_since: float | None = None
    last_error: str | None = None
    failures: int = 0  # consecutive quick deaths: the backoff's exponent


class Supervisor:
    """Keeps named background tasks running."""

    def __init__(self, *, restart_base_s: float = 0.1, restart_max_s: float = 10.0,
                 healthy_after_s: float = 30.0) -> None:
        self.restart_base_s = restart_base_s
        self.restart_max_s = restart_max_s
        self.healthy_after_s = healthy_after_s  # a run this long resets the backoff
        self.restarts_total = 0
        self._tasks: dict[str, _Supervised] = {}
        self.stop_signal = StopSignal()  # also cuts a restart backoff short

    @property
    def stopping(self) -> bool:
        """True from ``stop`` on (until a task is started again)."""
        return self.stop_signal.requested

    def has(self, name: str) -> bool:
        """True while task ``name`` is supervised (running or waiting to restart)."""
        entry = self._tasks.get(name)
        return entry is not None and entry.task is not None and not entry.task.done()

    def start(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        """Run ``factory()`` as task ``name``, restarting it whenever it raises."""
        if self.has(name):
            raise RuntimeError(f"task {name!r} is already running")
        self.stop_signal._lower()
        metrics.TASK_RESTARTS.labels(metrics.task_kind(name))  # its series exists from 0
        entry = _Supervised(name, factory)
        entry.task = asyncio.create_task(self._keep(entry), name=name)
        self._tasks[name] = entry

    async def _keep(self, entry: _Supervised) -> None:
        while True:
            started = time.monotonic()
            entry.running, entry.down_since = True, None
            try:
                await entry.factory()
                return  # it finished: its owner asked it to stop
            except asyncio.CancelledError as exc:
                task = asyncio.current_task()
                if task is None or task.cancelling():
                    raise  # the supervisor (or the loop) is stopping this task
                failure: BaseException = exc  # a stray cancellation from below: a failure
            except Exception as exc:  # the task boundary: seen, counted, restarted
                failure = exc
            finally:
                entry.running = False
            if not await self._died(entry, failure, started):
                return

    async def _died(self, entry: _Supervised, exc: BaseException, started: float) -> bool:
        """Log once with the traceback, count, wait out the backoff; False when stopping."""
        entry.down_since = time.monotonic()
        entry.restarts += 1
        self.restarts_total += 1
        metrics.TASK_RESTARTS.labels(metrics.task_kind(entry.name)).inc()
        entry.last_error = f"{type(exc).__name__}: {exc}"[:300]
        if time.monotonic() - started >= self.healthy_after_s:
            entry.failures = 0
        delay = min(self.restart_max_s, self.restart_base_s * 2 ** min(entry.failures, 20))
        entry.failures += 1
        if self.stopping:
            log.error("background task %s died while stopping", entry.name, exc_info=exc)
            return False
        log.error("background task %s died; restart %d in %.2fs", entry.name, entry.restarts,
                  delay, exc_info=exc)
        await self.stop_signal.pause(delay)
        return not self.stopping

    @property
    def ok(self) -> bool:
        """True when no task is down (waiting to be restarted)."""
        return all(e.down_since is None for e in self._tasks.values())

    def describe(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [{"name": e.name, "running": e.running, "restarts": e.restarts,
                 "down_s": round(now - e.down_since, 3) if e.down_since is not None else None,
                 "last_error": e.last_error} for e in self._tasks.values()]

    async def stop(self, timeout_s: float) -> None:
        """Wait (bounded) for the tasks to finish, then cancel the rest.

        Call after telling the loops to stop; a task that still runs at the
        deadline is cancelled and awaited.
        """
        self.stop_signal._raise()
        tasks = [e.task for e in self._tasks.values() if e.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=max(0.0, timeout_s))
            for task in pending:
                task.cancel()
            for task in tasks:
                try:
                    await task
                except asyncio.CancelledError:
                    if not task.cancelled():  # we ourselves are being cancelled
                        raise
        self._tasks.clear()
