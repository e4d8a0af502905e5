"""The processes the chaos scenario hurts: PostgreSQL, Redis, a proxy in front of each, ``serve``.

Layout under ``work_dir``: ``stores/`` holds the embedded PostgreSQL and Redis
(``server.embedded``, started by this process, Redis with ``appendfsync
always``), ``serve/`` is the server's data directory.  Everything is found and
stopped by pid, and only on 127.0.0.1.

What was checked, and decided here:

* ``serve`` is given ``DATABASE_URL`` and ``REDIS_URL`` (the proxies'): with
  both set it starts no embedded store, and nothing under ``serve/`` but the
  admin token.  ``ensure_admin_token`` (``server/runtime/prepare.py``) writes
  ``<data_dir>/admin-token`` whatever the stores are, the first time a start
  finds no such file and the database holds no admin token: so a fresh
  cluster (``initdb`` here, or a copy of a migrated template put at
  ``stores/postgres`` before ``start()``) gives the token, read the way
  ``ServeProcess.admin_token`` reads it.  ``serve`` applies the migrations.
* The server talks to the stores through the proxies only; the checker and the
  nemesis use the direct URLs (``database_url``, ``redis_url``), which a black
  hole does not touch.  A store restarted on another port (its old one taken
  meanwhile) is followed by retargeting its proxy: the server's URL never moves.
* Restarting on the same port: ``ServeProcess`` passes ``--port 0`` and
  argparse keeps the last ``--port``, so ``--port N`` among the extra
  arguments wins (verified).  The listening socket goes with the last process
  that held it, so every serving process is gone (waited for, by pid) before
  the restart; a bind that still fails is tried again until the deadline.
* ``--processes N``: the children are the processes ``ServeProcess.forks()``
  lists (the parent's command line).  ``kill_server(child=True)`` kills one
  with SIGKILL; the supervisor replaces it after a backoff (0.5 s, doubling
  per death of that slot within ``PROCESS_DEATHS_WINDOW_S``) —
  ``wait_children()`` waits for that.  ``PROCESS_DEATHS_MAX`` deaths within the
  window stop ``serve`` as a crash loop, so the stack raises it (1,000) unless
  ``env`` says otherwise: a nemesis's kills are not a crash loop.
* A SIGKILL of the parent leaves its children serving (orphans keep the
  inherited listening socket; with N > 1 it is ``SO_REUSEPORT``, so a new
  ``serve`` would bind beside them and share the port with the old ones).
  ``kill_server()`` therefore kills the whole server: the children first (by
  pid, before their parent can replace them: its backoff is ≥ 0.5 s), then the
  parent, then any process still running the same command line (unique: it
  names this stack's data directory), and waits until every one is gone.
* Redis: ``kill_redis`` is a SIGKILL of the pid in ``redis.pid``;
  ``start_redis`` starts a new one on the same directory, which replays the AOF
  (fsynced on every write: every 202 it took is there) before it answers PING.
  PostgreSQL: ``pg_ctl stop -m fast`` (clean) and ``pg_ctl start``.
* A black hole holds (``BlackHoleProxy.blackhole(hold=True)``): the flows open
  at that moment and every one opened until ``release`` are silent, so the
  fault lasts its span instead of ending at the server's next reconnect;
  ``release`` closes them all.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import psutil
import redis

from harness.proxy import ThreadedProxy
from harness.server import ServeProcess, ServerError, api
from server.embedded import EmbeddedPostgres, EmbeddedRedis

Store = Literal["redis", "postgres"]
STORES: tuple[Store, ...] = ("redis", "postgres")
# Defaults for the server under chaos; ``env`` overrides them.
SERVE_ENV = {"LOG_FORMAT": "text", "PROCESS_DEATHS_MAX": "1000"}


class ChaosError(RuntimeError):
    """A process of the stack could not be started, found or stopped as asked."""


class ChaosStack:
    """Embedded PostgreSQL + Redis, a ``ThreadedProxy`` in front of each, ``run.py serve``
    pointed at the proxies; each piece can be killed, stopped and brought back."""

    def __init__(self, work_dir: Path, *, processes: int = 1, env: dict[str, str] | None = None,
                 serve_args: Sequence[str] = (), start_timeout_s: float = 60) -> None:
        self.work_dir = Path(work_dir)
        self.stores_dir = self.work_dir / "stores"
        self.serve_dir = self.work_dir / "serve"
        self.processes = processes
        self.env = {**SERVE_ENV, **(env or {})}
        self.serve_args = list(serve_args)
        self.start_timeout_s = start_timeout_s
        self.postgres = EmbeddedPostgres(self.stores_dir)
        self.redis = EmbeddedRedis(self.stores_dir, fsync="always")
        self.proxies: dict[Store, ThreadedProxy] = {}
        self.server: ServeProcess | None = None
        self.servers: list[ServeProcess] = []  # every start, for their output
        self.port = 0
        self.url = ""
        self.token = ""

    # --- where things are --------------------------------------------------------

    @property
    def database_url(self) -> str:
        """PostgreSQL, directly (not through the proxy): for the checker."""
        return self.postgres.url

    @property
    def redis_url(self) -> str:
        """Redis, directly: for the nemesis (CONFIG SET, INFO)."""
        return self.redis.url

    def proxied_url(self, store: Store) -> str:
        """The URL the server is given: ``store``'s, through its proxy."""
        direct = self.postgres if store == "postgres" else self.redis
        url = direct.url
        return url.replace(f"127.0.0.1:{direct.port}", f"127.0.0.1:{self.proxies[store].port}")

    def redis_client(self) -> redis.Redis:
        """A direct client (short timeouts: the nemesis must not hang on a dead Redis)."""
        return redis.Redis.from_url(self.redis_url, socket_timeout=2, socket_connect_timeout=2)

    def server_pids(self) -> list[int]:
        """The serving processes now: the parent, then its children."""
        if self.server is None or self.server.proc.poll() is not None:
            return []
        return [self.server.proc.pid, *(child.pid for child in self._children())]

    def _children(self) -> list[psutil.Process]:
        """The server's serving children now (``ServeProcess.forks`` gives up on all of
        them when one is a zombie not yet reaped; this skips that one)."""
        assert self.server is not None
        try:
            parent = psutil.Process(self.server.proc.pid)
            children, command = parent.children(), parent.cmdline()
        except psutil.Error:
            return []
        serving = []
        for child in children:
            with contextlib.suppress(psutil.Error):
                if child.status() != psutil.STATUS_ZOMBIE and child.cmdline() == command:
                    serving.append(child)
        return serving

    def output(self, lines: int = 50) -> str:
        """The last lines the servers printed (every start), for a failure's message."""
        return "".join(line for server in self.servers for line in server.output)[-lines * 200:]

    # --- whole stack -------------------------------------------------------------

    def start(self) -> None:
        """Stores, proxies, ``serve``; returns once ``/ready`` says ``ready``."""
        try:
            self.postgres.start()
            self.redis.start()
            for store in STORES:
                direct = self.postgres if store == "postgres" else self.redis
                assert direct.port is not None
                self.proxies[store] = ThreadedProxy("127.0.0.1", direct.port).start()
            self._serve()
            self.token = self.server.admin_token if self.server else ""
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Everything this stack started, by pid: serve (SIGTERM, else SIGKILL), the
        proxies, Redis, PostgreSQL.  Safe to call twice, or after a failed start."""
        if self.server is not None:
            try:
                self.server.terminate(30)
            except ServerError:
                pass  # killed by terminate() itself
            self.server.kill()  # forks a SIGTERM left behind, and the output pipe
            self.server = None
        self._kill_strays()
        for proxy in self.proxies.values():
            proxy.close()
        self.redis.stop(even_if_reused=True)
        self.postgres.stop(even_if_reused=True)

    def __enter__(self) -> ChaosStack:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- the server --------------------------------------------------------------

    def kill_server(self, child: bool = False) -> list[int]:
        """SIGKILL the whole server (children, parent, strays) and wait until they are
        gone; or, ``child``, one child only (its parent replaces it).  The pids killed."""
        server = self.server
        if server is None or server.proc.poll() is not None:
            raise ChaosError("no server is running")
        if child:
            forks = self._children()
            if not forks:
                raise ChaosError("the server has no child to kill (processes=1?)")
            victim = forks[0]
            victim.kill()
            psutil.wait_procs([victim], timeout=10)
            return [victim.pid]
        victims = [psutil.Process(server.proc.pid), *self._children()]
        server.kill()  # SIGKILL, forks first, then the parent (reaped); the pipe closed
        self.server = None
        victims += self._kill_strays()
        _, alive = psutil.wait_procs(victims, timeout=10)
        if alive:
            raise ChaosError(f"serving processes outlived SIGKILL: {[p.pid for p in alive]}")
        return [victim.pid for victim in victims]

    def restart_server(self, timeout_s: float | None = None) -> None:
        """Start ``serve`` again on the same port; returns once it listens.

        A start that fails (a store it needs is down, the port not yet free) is
        tried again until ``timeout_s`` (default: ``start_timeout_s``); then the
        last failure is raised.
        """
        if self.server is not None and self.server.proc.poll() is None:
            raise ChaosError("the server is running: kill it first")
        deadline = time.monotonic() + (timeout_s if timeout_s is not None
                                       else self.start_timeout_s)
        while True:
            try:
                self._serve()
                return
            except ServerError:
                if time.monotonic() >= deadline:
                    raise
            time.sleep(0.5)  # a retry's pace, not a sync point: the start is checked

    def wait_children(self, timeout_s: float = 30) -> list[int]:
        """Wait until the server runs ``processes`` children again (after a child's
        death the supervisor forks a replacement after its backoff); their pids."""
        deadline = time.monotonic() + timeout_s
        while True:
            running = self.server_pids()
            pids = running[1:]
            if running and len(pids) >= (self.processes if self.processes > 1 else 0):
                return pids
            if time.monotonic() >= deadline:
                raise ChaosError(f"the server runs {len(pids)} of {self.processes} children "
                                 f"{timeout_s:g} s on")
            time.sleep(0.1)

    def _serve(self) -> None:
        env = {**self.env, "DATABASE_URL": self.proxied_url("postgres"),
               "REDIS_URL": self.proxied_url("redis")}
        args = [*self.serve_args, "--processes", str(self.processes)]
        if self.port:
            args += ["--port", str(self.port)]  # after ServeProcess's --port 0: it wins
        server = ServeProcess(self.serve_dir, *args, env=env,
                              start_timeout_s=self.start_timeout_s)
        self.servers.append(server)
        self.server = server
        if not self.port:
            self.port = server.port
            self.url = server.url
        elif server.port != self.port:
            server.kill()
            raise ChaosError(f"serve came back on port {server.port}, not {self.port}")

    def _kill_strays(self) -> list[psutil.Process]:
        """SIGKILL any process still running ``serve`` on this stack's data directory
        (a child whose parent died before it could be listed)."""
        needle = str(self.serve_dir)
        strays = []
        for proc in psutil.process_iter(["cmdline"]):
            cmdline = proc.info["cmdline"] or []
            if "serve" in cmdline and needle in cmdline:
                with contextlib.suppress(psutil.Error):
                    proc.kill()
                    strays.append(proc)
        return strays

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        last: object = None
        while time.monotonic() < deadline:
            try:
                status, body = api(self.url, "GET", "/ready", None, timeout=5)
                if status == 200 and body.get("status") == "ready":
                    return
                last = (status, body)
            except OSError as exc:
                last = exc
            time.sleep(0.1)
        raise ChaosError(f"/ready did not say ready within {self.start_timeout_s:g} s "
                         f"(last: {last!r})\n{self.output()}")

    # --- the stores --------------------------------------------------------------

    def kill_redis(self) -> int:
        """SIGKILL Redis; its pid (now gone)."""
        pid = self.redis.pid
        if pid is None or not psutil.pid_exists(pid):
            raise ChaosError("Redis is not running")
        self.redis.kill()
        if _running(pid):
            raise ChaosError(f"Redis (pid {pid}) outlived SIGKILL")
        return pid

    def start_redis(self) -> int:
        """Start Redis on its directory (the AOF replayed before it answers); its pid."""
        self.redis.start()
        assert self.redis.port is not None and self.redis.pid is not None
        self.proxies["redis"].retarget("127.0.0.1", self.redis.port)
        return self.redis.pid

    def stop_postgres(self) -> None:
        """Stop PostgreSQL (``pg_ctl stop -m fast``: its clients are cut off)."""
        self.postgres.stop(even_if_reused=True)
        if self.postgres.pid is not None and _running(self.postgres.pid):
            raise ChaosError("PostgreSQL did not stop")

    def start_postgres(self) -> None:
        self.postgres.start()
        assert self.postgres.port is not None
        self.proxies["postgres"].retarget("127.0.0.1", self.postgres.port)

    def blackhole(self, store: Store) -> None:
        """Silence the server's connections to ``store``, and every new one, until
        ``release(store)``."""
        self.proxies[store].blackhole(hold=True)

    def release(self, store: Store) -> int:
        """End ``store``'s black hole: its silenced flows closed; how many."""
        return self.proxies[store].release()


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
