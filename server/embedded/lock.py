"""Who uses a data directory's embedded stores: a lock, so that ``stores stop`` never
stops them under a running ``serve``.

Every command that runs on a data directory's embedded stores (``serve``,
``migrate``, ``token``: ``runtime/prepare.stores_ready``) holds a shared
``flock`` on ``<data_dir>/stores.lock`` for as long as it runs; the forks of
``serve --processes N`` inherit it, the store servers it starts do not (the
descriptor is closed on exec).  The kernel drops the lock when the last process
holding it exits, however it exits — ``kill -9`` included — so there is no pid
file that a killed ``serve`` could leave behind to look alive.

``stores stop`` takes the lock exclusively without waiting: it gets it only when
no such command runs, and holds it while it stops the stores, so that a
``serve`` starting meanwhile waits for it and then starts them afresh.  When the
lock is held, the processes holding it are found by which ones have the file
open, so that the refusal can name them.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

LOCK_FILE = "stores.lock"


def lock_path(data_dir: Path) -> Path:
    return Path(data_dir).resolve() / LOCK_FILE


class StoresLock:
    """This process's hold on the data directory's lock (``using_stores``)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd: int | None = fd

    def alone(self) -> bool:
        """Whether this is the last command using the stores, so that it may stop the
        ones it started: its shared hold is given up, and the lock taken exclusively
        without waiting — kept until the block ends (a ``serve`` starting meanwhile
        waits, then starts the stores afresh) — or, when another command still
        holds it, not at all (False: the stores are that command's now).  The shared
        hold cannot be upgraded in place: on Linux a failed upgrade drops it."""
        if self.fd is not None:
            os.close(self.fd)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            self.fd = None
            return False
        return True


@contextlib.contextmanager
def using_stores(data_dir: Path) -> Iterator[StoresLock]:
    """Hold the data directory's lock shared for the block (waiting out a ``stores
    stop`` that holds it)."""
    path = lock_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)  # not inherited by exec (PEP 446)
    lock = StoresLock(path, fd)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for `stores stop` on %s to finish", path.parent)
            fcntl.flock(fd, fcntl.LOCK_SH)
        yield lock
    finally:
        if lock.fd is not None:
            os.close(lock.fd)  # the lock goes with the last descriptor (forks may hold theirs)


@contextlib.contextmanager
def no_one_using(data_dir: Path) -> Iterator[bool]:
    """The lock held exclusively for the block when no command uses the stores (True);
    False, holding nothing, when one does.  A data directory that does not exist is
    used by no one (and is not created)."""
    path = lock_path(data_dir)
    if not path.parent.is_dir():
        yield True
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def users(data_dir: Path) -> list[psutil.Process]:
    """The processes (other than this one) that have the data directory's lock file
    open — those that hold it, or wait for it — without the forks of one of them
    (``serve --processes N``'s children: their parent is the one to stop).
    Processes this user may not inspect are not seen."""
    path = str(lock_path(data_dir))
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        with contextlib.suppress(psutil.Error, OSError):
            if any(f.path == path for f in proc.open_files()):
                found[proc.pid] = proc
    parents = {}
    for pid, proc in found.items():
        with contextlib.suppress(psutil.Error, OSError):
            parents[pid] = proc.ppid()
    return [proc for pid, proc in sorted(found.items()) if parents.get(pid) not in found]


def describe(proc: psutil.Process) -> str:
    """``pid N (its command line)``, or just ``pid N`` when it cannot be read."""
    try:
        return f"pid {proc.pid} ({' '.join(proc.cmdline())})"
    except (psutil.Error, OSError):
        return f"pid {proc.pid}"
