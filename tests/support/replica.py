"""A real streaming replica of a test's own embedded PostgreSQL (``own``), for the
read-replica tests.

``pg_basebackup -R`` (shipped with the embedded binaries) copies the running
primary over a replication connection and writes ``standby.signal`` and
``primary_conninfo``; the replica then runs as a hot standby on a free port,
streaming from the primary.  The primary's default ``pg_hba.conf`` (initdb's)
already admits replication connections from 127.0.0.1 with the cluster's
password (SCRAM), and the copy needs that password too: it is in
``primary_conninfo``, which stays in the replica's ``postgresql.auto.conf``
(mode 0600, owned by the user PostgreSQL runs as).  As root, everything runs
as that system user, like the primary.  Started and stopped by pid.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import psutil

from server.embedded.postgres import _PG_SYSTEM_USER, EmbeddedPostgres
from server.embedded.processes import free_port


class Replica:
    """A hot standby of the PostgreSQL at ``primary_url``, in ``directory``."""

    def __init__(self, primary_url: str, directory: Path) -> None:
        self.primary_url = primary_url
        self.pgdata = directory.resolve()
        self.port = free_port()
        parts = urlsplit(primary_url)
        self._primary_host, self._primary_port = parts.hostname, parts.port
        self._user, self._password = parts.username, parts.password
        self._bin = EmbeddedPostgres(directory)._bin
        self._run_as = _PG_SYSTEM_USER if os.geteuid() == 0 else None
        self.pid: int | None = None

    @property
    def url(self) -> str:
        return (f"postgresql://{self._user}:{self._password}@127.0.0.1:{self.port}"
                "/postgres")

    def start(self) -> None:
        if not (self.pgdata / "PG_VERSION").exists():
            self._base_backup()
        log = self.pgdata / "server.log"
        self._run(["pg_ctl", "-D", str(self.pgdata), "-l", str(log), "-o",
                   f"-h 127.0.0.1 -p {self.port} -c unix_socket_directories=''",
                   "-w", "-t", "60", "start"])
        self.pid = int((self.pgdata / "postmaster.pid").read_text().splitlines()[0])

    def stop(self) -> None:
        """Stop the replica by its postmaster's pid (fast shutdown), waiting for it."""
        if self.pid is None:
            return
        try:
            process = psutil.Process(self.pid)
            os.kill(self.pid, signal.SIGINT)  # PostgreSQL's "fast" shutdown
            process.wait(30)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
        self.pid = None

    def _base_backup(self) -> None:
        self.pgdata.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self._run_as is not None:
            import pwd

            entry = pwd.getpwnam(self._run_as)
            os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
        conninfo = (f"host={self._primary_host} port={self._primary_port} "
                    f"user={self._user} password={self._password}")
        # -R: standby.signal + primary_conninfo (with the password) for streaming.
        # -X stream: the WAL made during the copy comes along; -c fast: no wait
        # for the next checkpoint.
        self._run(["pg_basebackup", "-D", str(self.pgdata), "-d", conninfo, "-R",
                   "-X", "stream", "-c", "fast"])
        with open(self.pgdata / "postgresql.auto.conf", "a") as conf:
            # A hot standby (reads while it replays), reporting to the primary often.
            conf.write("wal_receiver_status_interval = 1s\nhot_standby = on\n")

    def _run(self, argv: list[str]) -> None:
        result = subprocess.run([str(self._bin / argv[0]), *argv[1:]], capture_output=True,
                                text=True, user=self._run_as, stdin=subprocess.DEVNULL,
                                timeout=120, cwd="/")
        if result.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed ({result.returncode}): "
                               f"{result.stderr.strip()[-500:]}")


@contextmanager
def replica_of(primary_url: str, directory: Path) -> Iterator[Replica]:
    """A running streaming replica of ``primary_url`` for the block, stopped after."""
    replica = Replica(primary_url, directory)
    try:
        replica.start()
        yield replica
    finally:
        replica.stop()
