"""The progress line of ``run.py bench``: what has been sent so far, and the server's state.

``answered=`` and ``errors=`` are the path's totals so far, not the running
group's: each group of phases gets fresh shared counters (``_run_group``) a
second or two before its generators start, so a per-group count read at a
boundary — where the sampler always takes a sample, and where a piped run's
throttled line mostly fell — said ``sent= 0`` however much had been sent (and
an upload counts only once answered, so its whole phase read 0).  In a
terminal the line is rewritten in place (``\\r``) every sample; piped (CI, a
log, ``| tee``) a line is printed when a phase begins (its counts are then
every earlier phase's final ones) and every ``PIPED_EVERY_S`` seconds within
one, and ``close()`` prints the last state, after the drain.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from harness import numfmt

PIPED_EVERY_S = 5.0


class Progress:
    """Formats and prints progress lines for one path's run to ``stream``."""

    def __init__(self, label: str, stream: TextIO | None = None,
                 live: bool | None = None) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self._counters: Any = None  # the running group's shared [answered, errors]
        self._done = [0, 0]  # sent, errors of the groups before it
        self._last_print = -PIPED_EVERY_S
        self._pending: tuple[str, str] | None = None  # (phase, line) not yet printed
        self._printed_phase: str | None = None

    def group(self, counters: Any) -> None:
        """A new group's shared counters; the last group's counts join the totals."""
        if self._counters is not None:
            self._done[0] += int(self._counters[0])
            self._done[1] += int(self._counters[1])
        self._counters = counters

    def totals(self) -> tuple[int, int]:
        """(requests answered, requests failed or dropped) over the path's run so far.

        A request counts once answered (an upload when it ends); a dropped one
        (never sent in time) counts as an error only."""
        current = self._counters
        sent, errors = (int(current[0]), int(current[1])) if current is not None else (0, 0)
        return self._done[0] + sent, self._done[1] + errors

    def line(self, phase: str, row: dict[str, Any]) -> str:
        sent, errors = self.totals()
        return (f"[{self.label}] phase={phase:<14} answered={sent:>7,} errors={errors:>5,}"
                f" accepted/s={row.get('accepted_per_s') or 0:>9,.0f}"
                f" committed/s={row.get('committed_per_s') or 0:>9,.0f}"
                f" queue={numfmt.count(row.get('queue_depth'))} rss={row.get('rss_mb') or 0:,.0f}MB"
                f" loop={row.get('loop_lag_ms') or 0:,.0f}ms")

    def update(self, phase: str, row: dict[str, Any], now: float) -> None:
        """One sample's line: shown in place live, else by the piped rule (module doc)."""
        text = self.line(phase, row)
        if self.live:
            self.stream.write("\r" + text)
            self.stream.flush()
            return
        if now - self._last_print >= PIPED_EVERY_S or phase != self._printed_phase:
            self._print(phase, text)
            self._last_print = now
            self._pending = None
        else:
            self._pending = (phase, text)

    def close(self) -> None:
        """End the line in place, or print the last line not yet printed."""
        if self.live:
            self.stream.write("\n")
        elif self._pending is not None:
            self._print(*self._pending)
            self._pending = None
        self.stream.flush()

    def _print(self, phase: str, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()
        self._printed_phase = phase
