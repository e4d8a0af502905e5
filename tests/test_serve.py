"""``run.py serve`` as a user runs it: embedded stores, kill -9, restart, SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import psycopg2
import pytest

from server.embedded import EmbeddedPostgres, EmbeddedRedis, _pid_alive, free_port

ROOT = Path(__file__).resolve().parent.parent


class Server:
    """One ``run.py serve`` subprocess, stopped by its pid."""

    def __init__(self, data_dir: Path, port: int, *extra: str) -> None:
        env = {k: v for k, v in os.environ.items()
               if k not in ("DATABASE_URL", "REDIS_URL")}
        env.update(QUEUE_LEASE_S="2", LOG_FORMAT="text", SHUTDOWN_TIMEOUT="10")
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
                return
        self.kill()
        raise AssertionError("server did not start:\n" + "".join(self.output))

    def kill(self) -> None:
        if self.proc.poll() is None:
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


@pytest.mark.timeout(240)
def test_serve_killed_with_sigkill_restarts_on_its_stores_and_commits_exactly_once(
        tmp_path: Path) -> None:
    port = free_port()
    first = Server(tmp_path, port, "--ingest-path", "naive")
    pg, rd = EmbeddedPostgres(tmp_path), EmbeddedRedis(tmp_path)
    try:
        token_file = tmp_path / "admin-token"
        assert oct(token_file.stat().st_mode & 0o777) == "0o600"
        token = token_file.read_text().strip()
        assert any(token in line for line in first.output)  # printed once, at first start
        status, comp = call(port, "POST", "/v1/competitions", token, {"slug": "k", "name": "K"})
        assert status == 201
        status, body = call(port, "POST", f"/v1/competitions/{comp['id']}/participants", token,
                            {"participants": [{"external_ref": str(i), "display_name": str(i)}
                                              for i in range(5)]})
        parts = [p["id"] for p in body["participants"]]
        accepted: set[str] = set()
        for batch in range(10):
            points = [{"id": f"b{batch}-{i}", "competition_id": comp["id"],
                       "participant_id": parts[i % 5], "value": 1} for i in range(300)]
            status, body = call(port, "POST", "/v1/points", token, {"points": points})
            assert status == 202
            accepted.update(body["ids"])
        pg_pid, redis_pid = pg.pid, rd.pid
        first.kill()  # SIGKILL while the naive workers are still draining
        assert _pid_alive(pg_pid, "postgres") and _pid_alive(redis_pid, "redis-server")

        second = Server(tmp_path, port)
        try:
            assert any("reusing PostgreSQL" in line for line in second.output)
            assert any("reusing Redis" in line for line in second.output)
            assert not any(token in line for line in second.output)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                _, queue = call(port, "GET", "/v1/admin/queue", token)
                if queue["depth"] == 0 and queue["inflight"] == 0:
                    break
                time.sleep(0.2)
            else:
                raise AssertionError(f"queue did not drain: {queue}")
            second.proc.send_signal(signal.SIGTERM)
            assert second.proc.wait(30) == 0
        finally:
            second.kill()
        # serve stopped nothing it had not started: the stores outlived both servers.
        assert _pid_alive(pg_pid, "postgres")
        pg.port = int((tmp_path / "postgres" / "postmaster.pid").read_text().split()[3])
        with psycopg2.connect(pg.url) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*), count(DISTINCT id) FROM points")
            assert cur.fetchone() == (len(accepted), len(accepted))
            cur.execute("SELECT id FROM points")
            assert {row[0] for row in cur.fetchall()} == accepted
            cur.execute("SELECT sum(points), sum(total) FROM standings")
            assert cur.fetchone() == (len(accepted), float(len(accepted)))
        conn.close()
    finally:
        first.kill()
        rd.stop(even_if_reused=True)  # the stores this test caused, by their pids
        pg.stop(even_if_reused=True)


@pytest.mark.timeout(120)
def test_serve_stops_on_sigterm_and_stops_the_stores_it_started(tmp_path: Path) -> None:
    port = free_port()
    server = Server(tmp_path, port)
    try:
        pg_pid, redis_pid = EmbeddedPostgres(tmp_path).pid, EmbeddedRedis(tmp_path).pid
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(60) == 0
        assert not _pid_alive(pg_pid, "postgres")
        assert not _pid_alive(redis_pid, "redis-server")
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
