"""Start-up that fails at any stage leaves nothing running and says why in one line; a
stop keeps to SHUTDOWN_TIMEOUT."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import psycopg2
import pytest
import tornado.ioloop

from server.embedded import EmbeddedPostgres, free_port
from server.runtime.lifecycle import running_service
from server.runtime.prepare import Stores
from tests.support import ROOT, copy_cluster, make_settings


def serve(data_dir: Path, port: int) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    return subprocess.run(
        [sys.executable, "run.py", "serve", "--data-dir", str(data_dir), "--port", str(port)],
        cwd=ROOT, env={**env, "LOG_FORMAT": "text"}, capture_output=True, text=True,
        timeout=120)


def left_running(data_dir: Path) -> list[str]:
    """Processes of this test's data directory: named in their command line
    (PostgreSQL's ``-D``) or working in it (Redis retitles itself ``host:port``
    but runs in its ``dir``)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        try:
            cwd = proc.info["cwd"] or ""
            if (any(str(data_dir) in part for part in proc.info["cmdline"] or ())
                    or cwd.startswith(str(data_dir))):
                found.append(" ".join(proc.info["cmdline"] or ()))
        except psutil.Error:
            continue
    return found


def occupied_port(data_dir: Path, template: Path) -> int:
    copy_cluster(template, data_dir)  # PostgreSQL starts, then the port is refused
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    occupied_port.holder = holder  # type: ignore[attr-defined]  # closed by the test
    return holder.getsockname()[1]


def broken_postgres(data_dir: Path, template: Path) -> int:
    # A data directory that claims to be a cluster but is not one.
    (data_dir / "postgres").mkdir(parents=True)
    (data_dir / "postgres" / "PG_VERSION").write_text("18\n")
    return free_port()


def broken_redis(data_dir: Path, template: Path) -> int:
    copy_cluster(template, data_dir)  # PostgreSQL starts, then Redis cannot
    (data_dir / "redis").mkdir(parents=True)
    (data_dir / "redis" / "appendonly.aof").write_text("this is not an append-only file\n")
    return free_port()


def conflicting_schema(data_dir: Path, template: Path) -> int:
    pg = EmbeddedPostgres(data_dir)  # a new cluster: the template is migrated already
    pg.start()
    try:
        conn = psycopg2.connect(pg.url)
        with conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE competitions (unexpected integer)")
        conn.close()
    finally:
        pg.stop()
    return free_port()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("breakage, message", [
    (occupied_port, "cannot listen on 127.0.0.1:"),
    (broken_postgres, "could not start PostgreSQL"),
    (broken_redis, "could not start Redis"),
    (conflicting_schema, "migration 0001_initial failed"),
], ids=["port-in-use", "postgres-will-not-start", "redis-will-not-start", "migration-fails"])
def test_failed_start_exits_1_with_one_line_and_leaves_nothing_running(
        tmp_path: Path, pg_template: Path, breakage: Callable[[Path, Path], int],
        message: str) -> None:
    port = breakage(tmp_path, pg_template)
    try:
        result = serve(tmp_path, port)
    finally:
        holder = getattr(occupied_port, "holder", None)
        if holder is not None:
            holder.close()
            del occupied_port.holder  # type: ignore[attr-defined]
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert left_running(tmp_path) == []


async def test_the_whole_stop_keeps_to_shutdown_timeout_though_a_connection_is_kept(
        clean: Stores, io_loop: tornado.ioloop.IOLoop) -> None:
    """A PostgreSQL connection someone never gives back: the pool's close would wait
    for it; the stop cuts it when SHUTDOWN_TIMEOUT is spent instead."""
    assert clean.redis_url is not None
    context = running_service(make_settings(shutdown_timeout_s=1.0), clean.database_url,
                              clean.redis_url)
    service = await context.__aenter__()
    kept = await service.deps.db.pool.acquire()
    started = time.monotonic()
    await context.__aexit__(None, None, None)
    assert time.monotonic() - started < 1.0 + 0.6
    assert kept.closed  # cut, not left open
