"""``run.py stores status|stop``, and what ``serve`` says of the stores as it exits.

A ``serve`` stops only the embedded stores it started: one that found them
running (after a ``kill -9`` of the ``serve`` before it, say) reuses them and
leaves them running when it stops.  So ``serve``'s last line says which it
stopped and which it left running, with the command that stops those:
``stores stop``, which stops a data directory's embedded stores whoever started
them — PostgreSQL with its ``pg_ctl`` (as the cluster's user), Redis by the pid
in its pid file (checked to be a redis-server) — and refuses while a command
still uses them (``lock.py``).  Every answer is a few plain lines; the exit
status is 0 unless something could not be done.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Iterable
from pathlib import Path

from server.embedded import EmbeddedPostgres, EmbeddedRedis, EmbeddedStores
from server.embedded.lock import describe, no_one_using, users

STOP_COMMAND = "{} run.py stores stop --data-dir {}"


def _stores(data_dir: Path) -> list[EmbeddedPostgres | EmbeddedRedis]:
    return [EmbeddedPostgres(data_dir), EmbeddedRedis(data_dir)]


def _where(pid: int, port: int | None) -> str:
    return f"pid {pid}, port {port}" if port is not None else f"pid {pid}"


def _and(names: Iterable[str]) -> str:
    return " and ".join(names)


def python_command() -> str:
    """This interpreter as a user would type it here: ``.venv/bin/python`` when it lies
    under the working directory (a bare ``python`` may be another one, without the
    project installed), else its absolute path."""
    relative = os.path.relpath(sys.executable)
    return shlex.quote(sys.executable if relative.startswith("..") else relative)


def stop_command(data_dir: Path) -> str:
    return STOP_COMMAND.format(python_command(), shlex.quote(str(data_dir)))


def status_lines(data_dir: Path) -> list[str]:
    """One line per store (running, with pid and port; or not), then who uses them."""
    lines = []
    for store in _stores(data_dir):
        state = store.running()
        lines.append(f"{store.name}: " + (f"running ({_where(*state)})" if state
                                          else "not running"))
    holders = users(data_dir)
    lines.append("used by: " + ("; ".join(describe(p) for p in holders) if holders
                                else "no running command"))
    return lines


def stop(data_dir: Path) -> tuple[int, list[str]]:
    """Stop the data directory's embedded stores, whoever started them: (exit status,
    the lines to print).  Refused (1) while a command uses them; 0 when nothing ran."""
    with no_one_using(data_dir) as free:
        if not free:
            holders = users(data_dir)
            named = "; ".join(describe(p) for p in holders) or "a process this user cannot see"
            them = "it" if len(holders) <= 1 else "them"
            how = f" (kill -TERM {' '.join(str(p.pid) for p in holders)})" if holders else ""
            return 1, [f"refused: the embedded stores of {data_dir} are in use by {named}",
                       f"stop {them} first{how}, then run again: {stop_command(data_dir)}"]
        running = [(store, store.running()) for store in _stores(data_dir)]
        running = [(store, state) for store, state in running if state is not None]
        if not running:
            return 0, [f"nothing to stop: no embedded store of {data_dir} is running"]
        code, lines = 0, []
        for store, state in reversed(running):  # Redis first, as serve stops them
            assert state is not None
            store.stop(even_if_reused=True)
            if store.running() is None:
                lines.append(f"stopped {store.name} ({_where(*state)})")
            else:
                code = 1
                lines.append(f"could not stop {store.name} ({_where(*state)}); see "
                             f"{store.log_file}")
        return code, lines


def exit_line(stores: EmbeddedStores, data_dir: Path) -> str | None:
    """``serve``'s last line: the embedded stores it stopped, and those it leaves
    running (reused, or that would not stop) with the command that stops them; None
    when it used no embedded store."""
    stopped: list[str] = []
    reused: list[str] = []
    stuck: list[str] = []
    in_use: list[str] = []
    for store in (stores.postgres, stores.redis):
        if store is None:
            continue
        state = store.running()
        if store.name in stores.left_in_use and state is not None:
            in_use.append(f"{store.name} ({_where(*state)})")
        elif store.name in stores.stopped_here:
            (stuck if state else stopped).append(
                f"{store.name} ({_where(*state)})" if state else store.name)
        elif state is not None:
            reused.append(f"{store.name} ({_where(*state)})")
    parts = []
    if stopped:
        parts.append(f"stopped the embedded {_and(stopped)} this serve started")
    if reused:
        them = "it" if len(reused) == 1 else "them"
        parts.append(f"left the embedded {_and(reused)} running (this serve reused {them}, "
                     f"it did not start {them})")
    if in_use:
        them = "it" if len(in_use) == 1 else "them"
        parts.append(f"left the embedded {_and(in_use)} running (this serve started "
                     f"{them}, another command still uses {them})")
    if stuck:
        parts.append(f"could not stop the embedded {_and(stuck)}")
    if reused or stuck or in_use:
        them = "it" if len(reused) + len(stuck) + len(in_use) == 1 else "them"
        parts.append(f"stop {them} with: {stop_command(data_dir)}")
    elif stopped:
        parts[-1] += f" (data dir {data_dir})"
    return "; ".join(parts) or None
