"""A server under test: ``run.py serve`` in a subprocess, started, read and stopped by pid.

The harness never imports the server's internals to run it: it starts the same
command a user runs.  ``ServeProcess`` is the one launcher, shared by the
harness and the test suite: it asks for port 0 (the kernel's choice, so it can
never race the embedded stores for a "free" port) and reads the port from the
``listening on`` line; it keeps reading the output so that the pipe never fills
and blocks the server (in chunks, not line by line: a default ``serve`` writes
an access line per request, ~10k lines/s under load, and this thread shares the
harness's process with the load generator).  ``ManagedServer`` is the harness's: a fresh data
directory of its own, removed when it stops (SIGTERM, which also stops the
embedded stores it started).  Server-side figures come from its HTTP API and
its PostgreSQL.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson
import psutil

ROOT = Path(__file__).resolve().parent.parent
_LISTENING = re.compile(r"^listening on http://[^:]+:(\d+) ")


class ServerError(RuntimeError):
    pass


class ServeProcess:
    """``run.py serve --data-dir DATA_DIR --port 0 ARGS...`` until it says it listens.

    ``env`` is added to this process's environment, without ``DATABASE_URL`` and
    ``REDIS_URL`` (a server under test starts its own embedded stores).
    """

    def __init__(self, data_dir: Path, *args: str, env: dict[str, str] | None = None,
                 start_timeout_s: float = 120, keep_lines: int = 1000) -> None:
        self.data_dir = Path(data_dir)
        self.keep_lines = keep_lines
        self.output: list[str] = []
        environment = {k: v for k, v in os.environ.items()
                       if k not in ("DATABASE_URL", "REDIS_URL")}
        environment.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "run.py", "serve", "--data-dir", str(self.data_dir),
             "--port", "0", *args],
            cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.port = self._wait_listening(start_timeout_s)
        self.url = f"http://127.0.0.1:{self.port}"
        self._pumping = threading.Thread(target=self._pump, daemon=True)
        self._pumping.start()

    def _wait_listening(self, timeout_s: float) -> int:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline().decode(errors="replace")
            if not line:
                break
            self.output.append(line)
            match = _LISTENING.match(line)
            if match:
                return int(match[1])
        self.kill()
        raise ServerError("server did not start:\n" + "".join(self.output[-30:]))

    def _pump(self) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        partial = b""
        with contextlib.suppress(ValueError, OSError):  # closed by kill()
            while chunk := stdout.read1(1 << 16):  # type: ignore[attr-defined]
                *lines, partial = (partial + chunk).split(b"\n")
                self.output += [line.decode(errors="replace") + "\n"
                                for line in lines[-self.keep_lines:]]
                del self.output[:-self.keep_lines]
        if partial:
            self.output.append(partial.decode(errors="replace"))

    @property
    def admin_token(self) -> str:
        """The admin token the first start of this data directory stored."""
        return (self.data_dir / "admin-token").read_text().strip()

    @property
    def database_url(self) -> str:
        """The embedded PostgreSQL's URL, with the data directory's store password."""
        lines = (self.data_dir / "postgres" / "postmaster.pid").read_text().splitlines()
        password = (self.data_dir / "store-password").read_text().strip()
        return f"postgresql://postgres:{password}@127.0.0.1:{lines[3]}/postgres"

    def forks(self) -> list[psutil.Process]:
        """The serving processes ``--processes N`` forked (not the stores it started)."""
        try:
            parent = psutil.Process(self.proc.pid)
            return [c for c in parent.children() if c.cmdline() == parent.cmdline()]
        except psutil.Error:
            return []

    def rss_bytes(self) -> int:
        try:
            return int(psutil.Process(self.proc.pid).memory_info().rss)
        except psutil.Error:
            return 0

    def peak_rss_bytes(self) -> int:
        """The most RSS the server process has held (Linux ``VmHWM``), else its RSS now.

        A sampler reads RSS once a second and can miss a spike between reads (a
        million-line upload can come and go in seconds); the kernel's high-water
        mark cannot.
        """
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
        except (OSError, ValueError, IndexError):
            pass
        return self.rss_bytes()

    def terminate(self, timeout_s: float = 60) -> int:
        """SIGTERM (a graceful stop); its exit code, or SIGKILL and an error past
        ``timeout_s``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ServerError(f"serve did not stop within {timeout_s:g}s of SIGTERM") from None
        # Its last lines are in ``output`` once this returns (the pipe read to its end;
        # bounded: a fork that outlived it would hold the pipe open).
        self._pumping.join(10)
        return code

    def kill(self) -> None:
        """SIGKILL, forks first (a fork outliving its parent would hold the output pipe
        and the port forever); then the output pipe is closed."""
        if self.proc.poll() is None:
            for fork in self.forks():
                with contextlib.suppress(psutil.Error):
                    fork.kill()
            self.proc.kill()
            self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class ManagedServer(ServeProcess):
    """``run.py serve --ingest-path PATH`` on embedded stores in a temporary directory."""

    def __init__(self, path: str, extra_env: dict[str, str] | None = None) -> None:
        self.path = path
        data_dir = Path(tempfile.mkdtemp(prefix=f"bench-{path}-"))
        try:
            # Logging as a default ``serve`` has it (the access line included): the
            # figures are what a user's server gives.
            super().__init__(data_dir, "--ingest-path", path, keep_lines=200,
                             env=extra_env)
        except BaseException:
            shutil.rmtree(data_dir, ignore_errors=True)
            raise
        self.token = self.admin_token

    def stop(self) -> int | None:
        """SIGTERM (the embedded stores stop with it), then the data directory goes."""
        code = None
        if self.proc.poll() is None:
            try:
                code = self.terminate(60)
            except ServerError:
                code = None
        else:
            code = self.proc.returncode
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        return code


def api(url: str, method: str, path: str, token: str | None, body: object = None,
        timeout: float = 30) -> tuple[int, dict]:
    """One blocking JSON call (setup and sampling only, never on the measured path)."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        url + path, method=method, data=orjson.dumps(body) if body is not None else None,
        headers={"Content-Type": "application/json",
                 **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, orjson.loads(response.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, orjson.loads(err.read() or b"{}")
