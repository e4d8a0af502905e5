"""What both embedded servers need: ports, liveness by pid, reading a failure's reason."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import psutil


class EmbeddedStoreError(RuntimeError):
    """An embedded store could not be started; the message says where to look."""


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def port_or_free(port_file: Path) -> int:
    """The port used last time (stable URLs across restarts) if still free, else a new one."""
    try:
        port = int(port_file.read_text())
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # As the servers do: connections in TIME_WAIT must not move the port.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
        return port
    except (OSError, ValueError):
        return free_port()


def last_problem(log_file: Path | None) -> list[str]:
    """The last FATAL/ERROR line of a server log (as a one-item list), if any."""
    if log_file is None or not log_file.exists():
        return []
    lines = log_file.read_text(errors="replace").splitlines()
    for line in reversed(lines[-50:]):
        if any(mark in line for mark in ("FATAL", "ERROR", "PANIC", "# ")):
            return [line.strip()]
    return lines[-1:]


def pid_alive(pid: int, needle: str) -> bool:
    """True when ``pid`` runs and its command line mentions ``needle``."""
    try:
        proc = psutil.Process(pid)
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE and any(
            needle in part for part in proc.cmdline()
        )
    except (psutil.Error, OSError):
        return False


def wait_gone(pid: int, needle: str, timeout_s: float) -> bool:
    """Wait until ``pid`` no longer runs ``needle`` (``pid_alive``); whether it went.

    Polled, not ``waitpid``: the server may be another process's child (a killed
    ``serve``'s, reparented), and a zombie nobody reaps counts as gone.
    """
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid, needle):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True
