"""``run.py serve`` as a user runs it: embedded stores, kill -9, restart, SIGTERM."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from harness.server import ServeProcess
from server.embedded import EmbeddedPostgres, EmbeddedRedis, pid_alive
from server.queue import keys
from tests.support import (
    ROOT,
    assert_exact,
    call,
    lock_waiters,
    locked,
    queue_state,
    send,
    serve,
    setup_competition,
    sql,
    until_sync,
)


def drain(url: str, token: str) -> None:
    until_sync(lambda: (lambda q: q["depth"] == q["inflight"] == 0)(queue_state(url, token)),
               "the queue to drain", timeout_s=60)


def assert_committed_exactly_once(pg: EmbeddedPostgres, accepted: set[str]) -> None:
    # A running server folds standings within ~0.2 s.
    until_sync(lambda: sql(pg.url, "SELECT count(*) FROM standing_deltas") == [(0,)],
               "every standings delta folded", timeout_s=10)
    assert_exact(pg.url, accepted)


def redis_stats(rd: EmbeddedRedis) -> dict[bytes, bytes]:
    client = redis.Redis.from_url(rd.url)
    try:
        return client.hgetall(keys.STATS)
    finally:
        client.close()


LEASE_S = 2.0  # tests.support.SERVE_ENV's QUEUE_LEASE_S


@pytest.mark.timeout(240)
def test_serve_killed_with_sigkill_three_times_mid_drain_commits_exactly_once(
        serve_dir: Path) -> None:
    rng = random.Random(20261127)
    pg, rd = EmbeddedPostgres(serve_dir), EmbeddedRedis(serve_dir)
    server = serve(serve_dir, "--ingest-path", "naive")
    try:
        token_file = serve_dir / "admin-token"
        assert oct(token_file.stat().st_mode & 0o777) == "0o600"
        token = server.admin_token
        assert any(token in line for line in server.output)  # printed once, at first start
        password = (serve_dir / "store-password").read_text().strip()
        assert not any(password in line for line in server.output)  # never logged
        cid, parts = setup_competition(server.url, token)
        accepted: set[str] = set()
        pg_pid, redis_pid = pg.pid, rd.pid
        for round_ in range(3):
            if round_:
                server = serve(serve_dir, "--ingest-path", "naive")
                assert any("reusing PostgreSQL" in line for line in server.output)
                assert any("reusing Redis" in line for line in server.output)
                assert not any(token in line for line in server.output)
            before = queue_state(server.url, token)["throughput"]["committed"]
            accepted |= send(server.url, token, cid, parts, f"r{round_}", 3)
            # Kill at a seeded moment of the naive drain: once some of this round's
            # 900 points are committed and most are not.
            target = before + rng.randrange(20, 300)

            def reached(url: str = server.url, target: int = target) -> bool:
                return queue_state(url, token)["throughput"]["committed"] >= target

            until_sync(reached, f"{target} points committed", timeout_s=60, interval_s=0.01)
            if round_ < 2:
                server.kill()  # SIGKILL
            else:
                # The last kill lands mid-write for certain: every worker holds a lease
                # and waits for the points table.
                pg.start()  # finds the running server (reuse) and learns its port
                with locked(pg.url, "points"):
                    until_sync(lambda: lock_waiters(pg.url) >= 1, "a write waiting")
                    server.kill()
            killed_at = time.monotonic()
            assert pid_alive(pg_pid, "postgres") and pid_alive(redis_pid, "redis-server")
        rd.start()  # finds the running Redis (reuse) and learns its port
        assert int(redis_stats(rd)[b"inflight"]) > 0  # the last server died holding leases
        server = serve(serve_dir)
        # The dead process's leases come back within the lease (plus a reclaim pass).
        until_sync(lambda: queue_state(server.url, token)["inflight"] == 0
                   and queue_state(server.url, token)["throughput"]["reclaimed"] > 0,
                   "the killed server's leases reclaimed", timeout_s=30)
        assert time.monotonic() - killed_at < LEASE_S + 10  # lease + reclaim + restart
        drain(server.url, token)
        assert server.terminate(30) == 0
        # serve stopped nothing it had not started: the stores outlived every server.
        assert pid_alive(pg_pid, "postgres")
        pg.start()  # finds the running server (reuse) and learns its port
        assert_committed_exactly_once(pg, accepted)
    finally:
        server.kill()
        rd.stop(even_if_reused=True)  # the stores this test caused, by their pids
        pg.stop(even_if_reused=True)


@pytest.mark.timeout(240)
def test_sigterm_during_a_drain_exits_0_and_loses_nothing(serve_dir: Path) -> None:
    pg, rd = EmbeddedPostgres(serve_dir), EmbeddedRedis(serve_dir)
    server = serve(serve_dir, "--ingest-path", "naive")
    try:
        token = server.admin_token
        cid, parts = setup_competition(server.url, token)
        assert call(server.url, "POST", "/v1/admin/queue/pause", token)[0] == 200
        accepted = send(server.url, token, cid, parts, "t", 4)
        assert call(server.url, "POST", "/v1/admin/queue/resume", token)[0] == 200
        until_sync(lambda: queue_state(server.url, token)["throughput"]["committed"] >= 50,
                   "the naive drain under way", interval_s=0.01)
        assert server.terminate(30) == 0  # the naive workers are mid-drain
        server.kill()  # already exited: closes its output pipe
        rd.start()
        stats = redis_stats(rd)
        assert int(stats.get(b"ready", 0)) > 0  # the SIGTERM did land mid-drain
        assert int(stats.get(b"inflight", 0)) == 0  # no lease left behind
        server = serve(serve_dir)
        drain(server.url, token)
        pg.start()
        assert_committed_exactly_once(pg, accepted)
    finally:
        server.kill()
        rd.stop(even_if_reused=True)
        pg.stop(even_if_reused=True)


@pytest.mark.timeout(240)
def test_sigterm_while_postgres_is_down_exits_0_and_loses_nothing(serve_dir: Path) -> None:
    pg, rd = EmbeddedPostgres(serve_dir), EmbeddedRedis(serve_dir)
    shutdown_s = 3
    server = serve(serve_dir, env={"SHUTDOWN_TIMEOUT": str(shutdown_s)})
    try:
        token = server.admin_token
        cid, parts = setup_competition(server.url, token)
        pg.start()  # learns the port of the server's PostgreSQL
        pg.stop(even_if_reused=True)  # this test's own store, stopped under the server
        accepted = send(server.url, token, cid, parts, "down", 3)  # into Redis only
        started = time.monotonic()
        assert server.terminate(30) == 0
        assert time.monotonic() - started < shutdown_s + 3  # within SHUTDOWN_TIMEOUT
        server.kill()
        rd.start()  # serve stopped the Redis it started; its AOF has every 202
        stats = redis_stats(rd)
        assert (int(stats[b"ready"]), int(stats.get(b"inflight", 0))) == (len(accepted), 0)
        server = serve(serve_dir)  # starts PostgreSQL again
        drain(server.url, token)
        assert_committed_exactly_once(pg, accepted)
    finally:
        server.kill()
        rd.stop(even_if_reused=True)
        pg.stop(even_if_reused=True)


@pytest.mark.timeout(120)
def test_serve_stops_on_sigterm_and_stops_the_stores_it_started(serve_dir: Path) -> None:
    server = serve(serve_dir)
    try:
        pg_pid, redis_pid = EmbeddedPostgres(serve_dir).pid, EmbeddedRedis(serve_dir).pid
        assert server.terminate(60) == 0
        assert not pid_alive(pg_pid, "postgres")
        assert not pid_alive(redis_pid, "redis-server")
        assert server.output[-1] == ("stopped the embedded PostgreSQL and Redis this serve "
                                     f"started (data dir {serve_dir})\n")
    finally:
        server.kill()


def test_a_fresh_data_directory_is_initialised_and_migrated_on_first_start(
        tmp_path: Path) -> None:
    # No template here: what a new user's first `serve` does, initdb included.
    server = ServeProcess(tmp_path, env={"LOG_FORMAT": "text"})
    try:
        assert any("applied migrations: 0001_initial" in line for line in server.output)
        assert call(server.url, "GET", "/v1/competitions", server.admin_token)[0] == 200
        assert server.terminate(60) == 0
    finally:
        server.kill()


def run_py(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=60)


def test_invalid_configuration_exits_2_naming_every_problem() -> None:
    result = run_py("check-config", env={"QUEUE_WORKERS": "many", "PG_POOL_MIN": "-1",
                                         "REDIS_URL": "http://nope", "LOG_LEVEL": "LOUD"})
    assert result.returncode == 2
    for name in ("QUEUE_WORKERS='many'", "PG_POOL_MIN='-1'", "REDIS_URL='http://nope'",
                 "LOG_LEVEL='LOUD'"):
        assert name in result.stderr


def test_harness_commands_run_whatever_the_server_environment_says() -> None:
    result = run_py("scenarios", env={"QUEUE_WORKERS": "many", "REDIS_URL": "http://nope"})
    assert result.returncode == 0, result.stderr
    assert "smoke" in result.stdout


def test_check_config_lists_settings_by_environment_variable() -> None:
    result = run_py("check-config", env={"QUEUE_BATCH_SIZE": "500"})
    assert result.returncode == 0, result.stderr
    assert "QUEUE_BATCH_SIZE=500" in result.stdout.splitlines()
