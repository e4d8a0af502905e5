"""A server under test: ``run.py serve`` on fresh embedded stores, or one already running.

The harness never imports the server's internals to run it: it starts the same
command a user runs, in a subprocess with a private data directory and a free
port, and stops it (SIGTERM, by pid), which also stops the embedded stores it
started.  Server-side figures come from its HTTP API and its PostgreSQL.
"""

from __future__ import annotations

import os
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

from server.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent


class ServerError(RuntimeError):
    pass


class ManagedServer:
    """``run.py serve --ingest-path PATH`` on embedded stores in a temporary directory."""

    def __init__(self, path: str, extra_env: dict[str, str] | None = None) -> None:
        self.path = path
        self.data_dir = Path(tempfile.mkdtemp(prefix=f"bench-{path}-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log: list[str] = []
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        env.update({"LOG_FORMAT": "text", "LOG_LEVEL": "WARNING", **(extra_env or {})})
        self.proc = subprocess.Popen(
            [sys.executable, "run.py", "serve", "--data-dir", str(self.data_dir),
             "--port", str(self.port), "--ingest-path", path],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 120
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.log.append(line)
            if line.startswith("listening on"):
                break
        else:
            line = ""
        if not line.startswith("listening on"):
            self.stop()
            raise ServerError("server did not start:\n" + "".join(self.log[-30:]))
        # Keep reading its output so the pipe never fills and blocks the server.
        threading.Thread(target=self._pump, daemon=True).start()
        self.token = (self.data_dir / "admin-token").read_text().strip()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.append(line)
            del self.log[:-200]

    @property
    def database_url(self) -> str:
        lines = (self.data_dir / "postgres" / "postmaster.pid").read_text().splitlines()
        return f"postgresql://postgres@127.0.0.1:{lines[3]}/postgres"

    def rss_bytes(self) -> int:
        try:
            return psutil.Process(self.proc.pid).memory_info().rss
        except psutil.Error:
            return 0

    def peak_rss_bytes(self) -> int:
        """The most RSS the server process has held (Linux ``VmHWM``), else its RSS now.

        The sampler reads RSS once a second and can miss a spike between reads
        (a million-line upload can come and go in seconds); the kernel's
        high-water mark cannot.
        """
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
        except (OSError, ValueError, IndexError):
            pass
        return self.rss_bytes()

    def stop(self) -> int | None:
        code = None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = self.proc.wait(10)
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
