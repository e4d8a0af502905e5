"""The parent of ``serve --processes N``: keeps N children serving, stops them all on SIGTERM.

The parent never runs an event loop (a fork must not copy one); it waits for
signals synchronously (``sigtimedwait``, with SIGTERM, SIGINT and SIGCHLD
blocked, so none is lost between two waits) and reaps its children with
``waitpid``.  A child that dies while the parent is not stopping is replaced
in the same slot: forked again from the parent, so it inherits the same
listening sockets (bound before the first fork) and builds its own pools and
workers as the first children did.  Its replacement waits a backoff that
doubles with each death of that slot within ``PROCESS_DEATHS_WINDOW_S`` (0.5 s,
1 s, 2 s… at most ``MAX_BACKOFF_S``), so a child that cannot start does not
spin.  ``PROCESS_DEATHS_MAX`` deaths (of any children) within the window are a
crash loop: the parent stops the others, says so in one line and exits 1 —
supervision that went on would only hide the cause.  Every replacement is
logged and counted (``points_process_restarts_total``; the parent writes it
into the shared metrics directory, so any child's ``/metrics`` reports it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from server.metrics import process_restarted

log = logging.getLogger(__name__)

STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})
WATCHED = STOP_SIGNALS | {signal.SIGCHLD}
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 8.0
POLL_S = 1.0  # a reap pass at least this often, whatever the signals say


@dataclass
class _Slot:
    """One of the N places a child serves in (its number names its log files)."""

    number: int
    pid: int | None = None
    restart_at: float | None = None  # monotonic time of the pending replacement
    deaths: deque[float] = field(default_factory=deque)  # within the window


def describe_status(status: int) -> str:
    """A wait status in words: "killed by SIGKILL", "exit code 1"."""
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


class Supervisor:
    """Forks ``processes`` children with ``run_child(number)`` and keeps them running.

    ``run_child`` runs in the child and returns its exit code; it never returns
    into the parent's code (the child leaves with ``os._exit``).
    """

    def __init__(self, processes: int, run_child: Callable[[int], int], *,
                 deaths_max: int, deaths_window_s: float) -> None:
        self.slots = [_Slot(number) for number in range(1, processes + 1)]
        self.run_child = run_child
        self.deaths_max = deaths_max
        self.deaths_window_s = deaths_window_s
        self.deaths: deque[float] = deque()  # every child's, within the window
        self.stopping = False
        self.worst = 0  # the worst exit code of the children stopped

    def run(self) -> int:
        """Supervise until stopped: 0 after a graceful stop of every child, the worst
        child's code otherwise, 1 after a crash loop."""
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED)
        try:
            for slot in self.slots:
                self._fork(slot)
            return self._supervise()
        finally:
            self._stop_all(signal.SIGKILL)  # only if the parent itself failed
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    def _supervise(self) -> int:
        gave_up = False
        while True:
            self._reap()
            if self.stopping and not self._running():
                return 1 if gave_up else self.worst
            if not self.stopping and self._crash_loop():
                gave_up = True
                self._stop_all(signal.SIGTERM)
            now = time.monotonic()
            due = [slot for slot in self.slots if slot.restart_at is not None]
            for slot in due:
                if slot.restart_at is not None and slot.restart_at <= now:
                    self._fork(slot, replacement=True)
            timeout = min([POLL_S, *(max(0.0, slot.restart_at - now) for slot in self.slots
                                     if slot.restart_at is not None)])
            received = signal.sigtimedwait(WATCHED, timeout)
            if received is not None and received.si_signo in STOP_SIGNALS:
                self._stop_all(received.si_signo)

    def _fork(self, slot: _Slot, *, replacement: bool = False) -> None:
        slot.restart_at = None
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                for sig in STOP_SIGNALS:  # the child's own event loop will handle them
                    signal.signal(sig, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, WATCHED)
                code = self.run_child(slot.number)
            finally:
                os._exit(code)
        slot.pid = pid
        if replacement:
            process_restarted()
            log.warning("process %d replaced: new pid %d", slot.number, pid)

    def _reap(self) -> None:
        """Collect every child that exited; schedule a replacement unless stopping.

        Only the serving children are waited for, by pid: an embedded store may be
        a child of this process too, and is its launcher's to reap."""
        for slot in self.slots:
            if slot.pid is None:
                continue
            try:
                pid, status = os.waitpid(slot.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: gone all the same
                pid, status = slot.pid, 0
            if pid == 0:
                continue
            slot.pid = None
            if self.stopping:
                self.worst = max(self.worst, os.waitstatus_to_exitcode(status) & 0xFF)
                continue
            now = time.monotonic()
            self.deaths.append(now)
            slot.deaths.append(now)
            for deaths in (self.deaths, slot.deaths):
                while deaths and deaths[0] < now - self.deaths_window_s:
                    deaths.popleft()
            backoff_s = min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** (len(slot.deaths) - 1))
            slot.restart_at = now + backoff_s
            log.error("process %d (pid %d) died: %s; replacing it in %.1f s",
                      slot.number, pid, describe_status(status), backoff_s)

    def _crash_loop(self) -> bool:
        """``deaths_max`` deaths within the window: say so once, loudly."""
        if len(self.deaths) < self.deaths_max:
            return False
        line = (f"{len(self.deaths)} server processes died within "
                f"{self.deaths_window_s:g} s (PROCESS_DEATHS_MAX={self.deaths_max}): a crash "
                "loop; stopping the others (each child's last output above says why)")
        log.critical(line)
        return True

    def _stop_all(self, signum: int) -> None:
        """Send ``signum`` to every running child; no replacement is started after it."""
        self.stopping = True
        for slot in self.slots:
            slot.restart_at = None
            if slot.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.pid, signum)

    def _running(self) -> bool:
        return any(slot.pid is not None for slot in self.slots)
