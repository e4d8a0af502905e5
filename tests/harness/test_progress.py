"""The progress line when bench's output is piped: real counts, a line per phase, the end."""

from __future__ import annotations

import io
import multiprocessing

from harness.progress import PIPED_EVERY_S, Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _counters(answered: int = 0, errors: int = 0):  # type: ignore[no-untyped-def]
    """Shared counters as ``_run_group`` makes them (what generator processes add to)."""
    live = multiprocessing.get_context("spawn").RawArray("q", 2)
    live[0], live[1] = answered, errors
    return live


ROW = {"accepted_per_s": 1234.0, "committed_per_s": 0.0, "queue_depth": 1500,
       "rss_mb": 61.2, "loop_lag_ms": 3.0}


def test_piped_counts_are_the_paths_totals_across_groups() -> None:
    """A new group's counters start at zero before its generators do: the line adds the
    groups before it, where it once read ``sent= 0`` at every phase's start."""
    out = io.StringIO()  # not a terminal, as under CI or `| tee`
    progress = Progress("naive", out)
    assert progress.live is False
    first = _counters()
    progress.group(first)
    progress.update("singles", ROW, now=100.0)
    first[0], first[1] = 30, 1  # the generators answered 30 requests, one failed
    progress.update("singles", ROW, now=101.0)
    progress.group(_counters())  # the next group, not started yet
    progress.update("batches", ROW, now=102.0)
    lines = out.getvalue().splitlines()
    assert lines[-1].startswith("[naive] phase=batches        answered=     30 errors=    1")
    assert "queue=1,500" in lines[-1] and "accepted/s=    1,234" in lines[-1]


def test_piped_lines_come_at_each_phase_and_every_few_seconds_and_at_the_end() -> None:
    out = io.StringIO()
    progress = Progress("pipelined", out)
    live = _counters()
    progress.group(live)
    for second in range(12):
        live[0] = 10 * second
        progress.update("steady", ROW, now=1000.0 + second)
    progress.update("drain", ROW, now=1012.0)
    live[0] = 125
    progress.update("drain", ROW, now=1012.5)
    progress.close()
    answered = [int(line.split("answered=")[1].split()[0]) for line in out.getvalue()
                .splitlines()]
    # steady at 0 s, 5 s and 10 s; drain as it begins; the last state on close
    assert answered == [0, 50, 100, 110, 125]
    assert PIPED_EVERY_S == 5.0


def test_a_terminal_gets_one_line_rewritten_in_place() -> None:
    out = _Terminal()
    progress = Progress("naive", out)
    assert progress.live is True
    progress.group(_counters(7))
    progress.update("singles", ROW, now=1.0)
    progress.update("singles", ROW, now=1.2)
    progress.close()
    text = out.getvalue()
    assert text.count("\r[naive] phase=singles") == 2 and text.endswith("\n")
    assert text.count("\n") == 1
