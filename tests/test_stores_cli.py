"""``run.py stores status|stop``, and ``serve``'s last line on the stores it leaves.

A ``serve`` stops only the embedded stores it started; one that reused them (after a
``kill -9`` of the one before) leaves them running and says so, and ``stores stop``
stops them whoever started them — never under a command still using them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from server.embedded import EmbeddedPostgres, EmbeddedRedis, pid_alive
from server.embedded.lock import no_one_using, using_stores
from tests.support import ROOT, call, serve, served


def stores(action: str, data_dir: Path) -> subprocess.CompletedProcess:
    """``run.py stores ACTION --data-dir DATA_DIR``, as a user runs it."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    return subprocess.run([sys.executable, "run.py", "stores", action, "--data-dir",
                           str(data_dir)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def running(data_dir: Path) -> tuple[tuple[int, int], tuple[int, int | None]]:
    """(pid, port) of the data directory's PostgreSQL and Redis, both running."""
    pg, rd = EmbeddedPostgres(data_dir).running(), EmbeddedRedis(data_dir).running()
    assert pg is not None and rd is not None, (pg, rd)
    return pg, rd


def last_line_of_a_serve(data_dir: Path) -> str:
    """Start a ``serve`` on ``data_dir``, stop it cleanly (exit 0); its last line."""
    server = serve(data_dir)
    try:
        assert server.terminate(60) == 0
    finally:
        server.kill()
    return server.output[-1]


def stop_command(data_dir: Path) -> str:
    """As serve and stores print it: the interpreter they run as, seen from ROOT (their
    working directory)."""
    relative = os.path.relpath(sys.executable, ROOT)
    python = sys.executable if relative.startswith("..") else relative
    return f"{python} run.py stores stop --data-dir {data_dir}"


@pytest.mark.timeout(120)
def test_stores_stop_stops_what_a_killed_serve_left_running(serve_dir: Path) -> None:
    with served(serve_dir) as server:
        (pg_pid, pg_port), (rd_pid, rd_port) = running(serve_dir)
        server.kill()  # SIGKILL: the stores outlive it

        status = stores("status", serve_dir)
        assert status.returncode == 0, status.stderr
        assert status.stdout.splitlines() == [
            f"data dir: {serve_dir}",
            f"PostgreSQL: running (pid {pg_pid}, port {pg_port})",
            f"Redis: running (pid {rd_pid}, port {rd_port})",
            "used by: no running command"]

        stop = stores("stop", serve_dir)
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert stop.stdout.splitlines() == [f"stopped Redis (pid {rd_pid}, port {rd_port})",
                                            f"stopped PostgreSQL (pid {pg_pid}, port {pg_port})"]
        assert not pid_alive(pg_pid, "postgres") and not pid_alive(rd_pid, "redis-server")

        status = stores("status", serve_dir)
        assert status.stdout.splitlines()[1:3] == ["PostgreSQL: not running",
                                                   "Redis: not running"]
        again = stores("stop", serve_dir)  # idempotent: nothing to stop is no error
        assert (again.returncode, again.stdout) == (
            0, f"nothing to stop: no embedded store of {serve_dir} is running\n")


@pytest.mark.timeout(120)
def test_stores_stop_is_refused_while_a_serve_uses_the_stores(serve_dir: Path) -> None:
    with served(serve_dir) as server:
        (pg_pid, _), (rd_pid, _) = running(serve_dir)
        pid = server.proc.pid
        stop = stores("stop", serve_dir)
        assert stop.returncode == 1
        refusal, advice = stop.stdout.splitlines()
        assert refusal.startswith(f"refused: the embedded stores of {serve_dir} are in use "
                                  f"by pid {pid} (")
        assert "run.py serve" in refusal
        assert advice == (f"stop it first (kill -TERM {pid}), then run again: "
                          f"{stop_command(serve_dir)}")
        assert pid_alive(pg_pid, "postgres") and pid_alive(rd_pid, "redis-server")
        status = stores("status", serve_dir)
        assert status.stdout.splitlines()[-1].startswith(f"used by: pid {pid} (")


@pytest.mark.timeout(180)
def test_serve_s_last_line_says_which_stores_it_leaves_running_and_how_to_stop_them(
        serve_dir: Path) -> None:
    with served(serve_dir) as first:
        (pg_pid, pg_port), (rd_pid, rd_port) = running(serve_dir)
        first.kill()
        assert last_line_of_a_serve(serve_dir) == (  # reuses both
            f"left the embedded PostgreSQL (pid {pg_pid}, port {pg_port}) and Redis (pid "
            f"{rd_pid}, port {rd_port}) running (this serve reused them, it did not start "
            f"them); stop them with: {stop_command(serve_dir)}\n")
        assert running(serve_dir) == ((pg_pid, pg_port), (rd_pid, rd_port))

        EmbeddedRedis(serve_dir).stop(even_if_reused=True)  # Redis gone, PostgreSQL not
        assert last_line_of_a_serve(serve_dir) == (  # starts Redis, reuses PostgreSQL
            f"stopped the embedded Redis this serve started; left the embedded PostgreSQL "
            f"(pid {pg_pid}, port {pg_port}) running (this serve reused it, it did not start "
            f"it); stop it with: {stop_command(serve_dir)}\n")
        assert EmbeddedRedis(serve_dir).running() is None


def test_stores_stop_waits_for_no_one_and_a_user_of_the_stores_keeps_it_out(
        tmp_path: Path) -> None:
    with no_one_using(tmp_path) as free:
        assert free
    with using_stores(tmp_path), using_stores(tmp_path):  # users share the lock
        with no_one_using(tmp_path) as free:
            assert not free
    with no_one_using(tmp_path) as free:
        assert free  # the lock went with its last user


@pytest.mark.timeout(180)
def test_a_serve_leaves_the_stores_it_started_running_while_another_serve_uses_them(
        serve_dir: Path) -> None:
    with served(serve_dir) as first:
        (pg_pid, pg_port), (rd_pid, rd_port) = running(serve_dir)
        with served(serve_dir) as second:  # another port, the same stores: reused
            assert first.terminate(60) == 0
            assert first.output[-1] == (
                f"left the embedded PostgreSQL (pid {pg_pid}, port {pg_port}) and Redis "
                f"(pid {rd_pid}, port {rd_port}) running (this serve started them, another "
                f"command still uses them); stop them with: {stop_command(serve_dir)}\n")
            assert running(serve_dir) == ((pg_pid, pg_port), (rd_pid, rd_port))
            assert call(second.url, "GET", "/ready", None)[0] == 200  # still served


def test_a_stale_pid_file_naming_another_process_is_not_a_store_and_is_never_signalled(
        tmp_path: Path) -> None:
    """After a reboot (or a kill -9 of the store) the pid files stay; their pids may
    since belong to anything — here a process whose command line says both
    "postgres" and "redis-server", as a system server's would."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                              "postgres", "redis-server", "127.0.0.1:1"])
    try:
        (tmp_path / "postgres").mkdir()
        (tmp_path / "postgres" / "postmaster.pid").write_text(
            f"{other.pid}\n{tmp_path / 'postgres'}\n0\n5432\n")
        (tmp_path / "redis").mkdir()
        (tmp_path / "redis" / "redis.pid").write_text(f"{other.pid}\n")
        (tmp_path / "redis" / "port").write_text("6379")
        status = stores("status", tmp_path)
        assert status.stdout.splitlines()[1:3] == ["PostgreSQL: not running",
                                                   "Redis: not running"], status.stdout
        stop = stores("stop", tmp_path)
        assert (stop.returncode, stop.stdout) == (
            0, f"nothing to stop: no embedded store of {tmp_path} is running\n")
        assert other.poll() is None  # never signalled
    finally:
        other.kill()
        other.wait()
