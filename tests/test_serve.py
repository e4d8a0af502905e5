"""``run.py serve`` as a user runs it: embedded stores, kill -9, restart, SIGTERM."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import psutil
import pytest
import redis

from server.embedded import EmbeddedPostgres, EmbeddedRedis, free_port, pid_alive
from tests.conftest import assert_exact, sql

ROOT = Path(__file__).resolve().parent.parent


class Server:
    """One ``run.py serve`` subprocess, stopped by its pid."""

    def __init__(self, data_dir: Path, port: int, *extra: str,
                 env: dict[str, str] | None = None) -> None:
        overrides = env or {}
        env = {k: v for k, v in os.environ.items()
               if k not in ("DATABASE_URL", "REDIS_URL")}
        env.update(LOG_FORMAT="text", SHUTDOWN_TIMEOUT="10")  # the default lease: 10 s
        env.update(overrides)
        self.proc = subprocess.Popen(
            [sys.executable, "run.py", "serve", "--data-dir", str(data_dir), "--port",
             str(port), *extra],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.output: list[str] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.output.append(line)
            if line.startswith("listening on"):
                # Keep reading: an access line per request would fill the pipe and
                # block the server on its next log write.
                threading.Thread(target=self._pump, daemon=True).start()
                return
        self.kill()
        raise AssertionError("server did not start:\n" + "".join(self.output))

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        with contextlib.suppress(ValueError, OSError):  # closed by kill()
            for line in self.proc.stdout:
                self.output.append(line)
                del self.output[:-1000]

    def forks(self) -> list[psutil.Process]:
        """The serving processes ``--processes N`` forked (not the stores it started)."""
        try:
            parent = psutil.Process(self.proc.pid)
            return [c for c in parent.children() if c.cmdline() == parent.cmdline()]
        except psutil.Error:
            return []

    def kill(self) -> None:
        """SIGKILL, forks first: a fork outliving its parent would hold the output
        pipe open (and the port) forever."""
        if self.proc.poll() is None:
            for fork in self.forks():
                with contextlib.suppress(psutil.Error):
                    fork.kill()
            self.proc.kill()
            self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()



def call(port: int, method: str, path: str, token: str, body: object = None
         ) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", method=method,
        data=orjson.dumps(body) if body is not None else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, orjson.loads(err.read())


def _setup(port: int, token: str) -> tuple[int, list[int]]:
    status, comp = call(port, "POST", "/v1/competitions", token, {"slug": "k", "name": "K"})
    assert status == 201
    status, body = call(port, "POST", f"/v1/competitions/{comp['id']}/participants", token,
                        {"participants": [{"external_ref": str(i), "display_name": str(i)}
                                          for i in range(5)]})
    return comp["id"], [p["id"] for p in body["participants"]]


def _send(port: int, token: str, cid: int, parts: list[int], tag: str, batches: int
          ) -> set[str]:
    accepted: set[str] = set()
    for batch in range(batches):
        points = [{"id": f"{tag}-{batch}-{i}", "competition_id": cid,
                   "participant_id": parts[i % 5], "value": 1} for i in range(300)]
        status, body = call(port, "POST", "/v1/points", token, {"points": points})
        assert status == 202
        accepted.update(body["ids"])
    return accepted


def _drain(port: int, token: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        _, queue = call(port, "GET", "/v1/admin/queue", token)
        if queue["depth"] == 0 and queue["inflight"] == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"queue did not drain: {queue}")


def _assert_exact(pg: EmbeddedPostgres, accepted: set[str]) -> None:
    deadline = time.monotonic() + 10  # a running server folds standings within ~0.2 s
    while time.monotonic() < deadline:
        if sql(pg.url, "SELECT count(*) FROM standing_deltas") == [(0,)]:
            break
        time.sleep(0.1)
    assert_exact(pg.url, accepted)


@pytest.mark.timeout(300)
def test_serve_killed_with_sigkill_three_times_mid_drain_commits_exactly_once(
        tmp_path: Path) -> None:
    port = free_port()
    rng = random.Random(20261127)
    pg, rd = EmbeddedPostgres(tmp_path), EmbeddedRedis(tmp_path)
    server = Server(tmp_path, port, "--ingest-path", "naive")
    try:
        token_file = tmp_path / "admin-token"
        assert oct(token_file.stat().st_mode & 0o777) == "0o600"
        token = token_file.read_text().strip()
        assert any(token in line for line in server.output)  # printed once, at first start
        cid, parts = _setup(port, token)
        accepted: set[str] = set()
        pg_pid, redis_pid = pg.pid, rd.pid
        for round_ in range(3):
            if round_:
                server = Server(tmp_path, port, "--ingest-path", "naive")
                assert any("reusing PostgreSQL" in line for line in server.output)
                assert any("reusing Redis" in line for line in server.output)
                assert not any(token in line for line in server.output)
            accepted |= _send(port, token, cid, parts, f"r{round_}", 6)
            time.sleep(rng.uniform(0.05, 0.8))  # a random moment of the naive drain
            server.kill()  # SIGKILL
            killed_at = time.monotonic()
            assert pid_alive(pg_pid, "postgres") and pid_alive(redis_pid, "redis-server")
        server = Server(tmp_path, port)
        # The dead process's leases (orphans) come back within the lease, 10 s.
        _, queue = call(port, "GET", "/v1/admin/queue", token)
        assert queue["inflight"] > 0, queue
        while queue["inflight"] > 0 and time.monotonic() - killed_at < 30:
            time.sleep(0.1)
            _, queue = call(port, "GET", "/v1/admin/queue", token)
        assert time.monotonic() - killed_at < 10 + 4  # lease + reclaim pass + restart
        _drain(port, token)
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(30) == 0
        # serve stopped nothing it had not started: the stores outlived every server.
        assert pid_alive(pg_pid, "postgres")
        pg.start()  # finds the running server (reuse) and learns its port
        _assert_exact(pg, accepted)
    finally:
        server.kill()
        rd.stop(even_if_reused=True)  # the stores this test caused, by their pids
        pg.stop(even_if_reused=True)


@pytest.mark.timeout(300)
def test_sigterm_during_a_drain_exits_0_and_loses_nothing(tmp_path: Path) -> None:
    port = free_port()
    pg, rd = EmbeddedPostgres(tmp_path), EmbeddedRedis(tmp_path)
    server = Server(tmp_path, port, "--ingest-path", "naive")
    try:
        token = (tmp_path / "admin-token").read_text().strip()
        cid, parts = _setup(port, token)
        accepted = _send(port, token, cid, parts, "t", 10)
        server.proc.send_signal(signal.SIGTERM)  # the naive workers are mid-drain
        assert server.proc.wait(30) == 0
        server.kill()  # already exited: closes its output pipe
        rd.start()
        stats = rd_stats(rd)
        assert int(stats.get(b"ready", 0)) > 0  # the SIGTERM did land mid-drain
        assert int(stats.get(b"inflight", 0)) == 0  # no lease left behind
        server = Server(tmp_path, port)
        _drain(port, token)
        pg.start()
        _assert_exact(pg, accepted)
    finally:
        server.kill()
        rd.stop(even_if_reused=True)
        pg.stop(even_if_reused=True)


@pytest.mark.timeout(300)
def test_sigterm_while_postgres_is_down_exits_0_and_loses_nothing(tmp_path: Path) -> None:
    port = free_port()
    pg, rd = EmbeddedPostgres(tmp_path), EmbeddedRedis(tmp_path)
    server = Server(tmp_path, port)
    try:
        token = (tmp_path / "admin-token").read_text().strip()
        cid, parts = _setup(port, token)
        pg.start()  # learns the port of the server's PostgreSQL
        pg.stop(even_if_reused=True)  # this test's own store, stopped under the server
        accepted = _send(port, token, cid, parts, "down", 3)  # into Redis only
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(30) == 0
        assert time.monotonic() - started < 10 + 5  # within SHUTDOWN_TIMEOUT
        server.kill()
        rd.start()  # serve stopped the Redis it started; its AOF has every 202
        stats = rd_stats(rd)
        assert (int(stats[b"ready"]), int(stats.get(b"inflight", 0))) == (len(accepted), 0)
        server = Server(tmp_path, port)  # starts PostgreSQL again
        _drain(port, token)
        _assert_exact(pg, accepted)
    finally:
        server.kill()
        rd.stop(even_if_reused=True)
        pg.stop(even_if_reused=True)


def rd_stats(rd: EmbeddedRedis) -> dict:
    client = redis.Redis.from_url(rd.url)
    try:
        return client.hgetall("pq:stats")
    finally:
        client.close()


@pytest.mark.timeout(120)
def test_serve_stops_on_sigterm_and_stops_the_stores_it_started(tmp_path: Path) -> None:
    port = free_port()
    server = Server(tmp_path, port)
    try:
        pg_pid, redis_pid = EmbeddedPostgres(tmp_path).pid, EmbeddedRedis(tmp_path).pid
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(60) == 0
        assert not pid_alive(pg_pid, "postgres")
        assert not pid_alive(redis_pid, "redis-server")
    finally:
        server.kill()


def test_invalid_configuration_exits_2_naming_every_problem() -> None:
    env = {**os.environ, "QUEUE_WORKERS": "many", "PG_POOL_MIN": "-1",
           "REDIS_URL": "http://nope", "LOG_LEVEL": "LOUD"}
    result = subprocess.run([sys.executable, "run.py", "check-config"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    for name in ("QUEUE_WORKERS='many'", "PG_POOL_MIN='-1'", "REDIS_URL='http://nope'",
                 "LOG_LEVEL='LOUD'"):
        assert name in result.stderr


def test_harness_commands_run_whatever_the_server_environment_says() -> None:
    env = {**os.environ, "QUEUE_WORKERS": "many", "REDIS_URL": "http://nope"}
    result = subprocess.run([sys.executable, "run.py", "scenarios"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "smoke" in result.stdout


def test_check_config_lists_settings_by_environment_variable() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    result = subprocess.run([sys.executable, "run.py", "check-config"], cwd=ROOT,
                            env={**env, "QUEUE_BATCH_SIZE": "500"}, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "QUEUE_BATCH_SIZE=500" in result.stdout.splitlines()
