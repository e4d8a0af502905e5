"""``run.py serve --processes 2`` supervising its children: a dead child is replaced, a
crash loop stops everything loudly, SIGTERM still stops all with exit 0."""

from __future__ import annotations

import http.client
import os
import signal
import threading
import urllib.error
from pathlib import Path

import psutil
import pytest

from server.embedded import EmbeddedPostgres, EmbeddedRedis, pid_alive
from tests.support import (
    assert_exact,
    call,
    queue_state,
    serve,
    served,
    setup_competition,
    sql,
    until_sync,
)


def restarts_counted(url: str) -> float | None:
    """``points_process_restarts_total`` as ``/metrics`` shows it (None: not shown)."""
    import urllib.request

    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("points_process_restarts_total "):
                return float(line.split()[1])
    return None


class Sender(threading.Thread):
    """Batches of 100 points, one request at a time, until stopped; a request whose
    answer is lost (its process killed under it) is sent again, as a client would: the
    same ids, so the server counts them once.  ``accepted``: every id answered 202."""

    def __init__(self, url: str, token: str, cid: int, parts: list[int]) -> None:
        super().__init__(daemon=True)
        self.url, self.token, self.cid, self.parts = url, token, cid, parts
        self.accepted: set[str] = set()
        self.lost_answers = 0
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            number = 0
            while not self.stop.is_set():
                points = [{"id": f"s-{number}-{i}", "competition_id": self.cid,
                           "participant_id": self.parts[i % 5], "value": 1 + i % 3}
                          for i in range(100)]
                for _attempt in range(20):
                    try:
                        status, body = call(self.url, "POST", "/v1/points", self.token,
                                            {"points": points})
                        break
                    except (urllib.error.URLError, http.client.HTTPException, OSError):
                        self.lost_answers += 1
                else:
                    raise AssertionError(f"batch {number}: no answer in 20 attempts")
                assert status == 202, body
                self.accepted.update(body["ids"])
                number += 1
        except BaseException as exc:  # reported by the test's thread
            self.error = exc

    def sent_at_least(self, count: int) -> bool:
        return len(self.accepted) >= count


@pytest.mark.timeout(120)
def test_a_child_killed_with_sigkill_mid_ingest_is_replaced_and_every_point_commits_once(
        serve_dir: Path) -> None:
    with served(serve_dir, "--processes", "2", "--ingest-path", "naive") as server:
        until_sync(lambda: len(server.forks()) == 2, "two serving processes")
        pg_pid, redis_pid = EmbeddedPostgres(serve_dir).pid, EmbeddedRedis(serve_dir).pid
        token = server.admin_token
        cid, parts = setup_competition(server.url, token)
        sender = Sender(server.url, token, cid, parts)
        sender.start()
        until_sync(lambda: sender.sent_at_least(1000)
                   and queue_state(server.url, token)["throughput"]["committed"] >= 200,
                   "ingest and the naive drain under way", timeout_s=30)
        first = {p.pid for p in server.forks()}
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        until_sync(lambda: len(server.forks()) == 2
                   and victim not in {p.pid for p in server.forks()},
                   "the killed process replaced", timeout_s=15)
        (replacement,) = {p.pid for p in server.forks()} - first
        # The new process serves on the same listening socket as the first ones.
        until_sync(lambda: any(f"(pid {replacement}," in line and "listening on" in line
                               for line in server.output), "the new process listening")
        accepted_then = len(sender.accepted)
        until_sync(lambda: len(sender.accepted) >= accepted_then + 1000,
                   "ingest going on after the replacement", timeout_s=30)
        sender.stop.set()
        sender.join(30)
        assert sender.error is None, sender.error
        until_sync(lambda: (lambda q: q["depth"] == q["inflight"] == q["retry_scheduled"] == 0)(
            queue_state(server.url, token)), "the queue drained (the victim's leases "
            "reclaimed)", timeout_s=60)
        until_sync(lambda: restarts_counted(server.url) == 1, "the replacement counted")
        database_url = server.database_url
        until_sync(lambda: _folded(database_url), "every standings delta folded")
        assert_exact(database_url, sender.accepted)
        assert any(f"(pid {victim}) died: killed by SIGKILL" in line
                   for line in server.output)
        # SIGTERM stops the replaced child and the other alike: exit 0, stores stopped.
        children = [p.pid for p in server.forks()]
        assert server.terminate(30) == 0
        assert not any(pid_alive(pid, "run.py") for pid in children)
        assert not pid_alive(pg_pid, "postgres")
        assert not pid_alive(redis_pid, "redis-server")


def _folded(database_url: str) -> bool:
    return sql(database_url, "SELECT count(*) FROM standing_deltas") == [(0,)]


@pytest.mark.timeout(120)
def test_children_that_die_at_start_every_time_stop_serve_with_one_line_and_exit_1(
        serve_dir: Path) -> None:
    """A crash loop with a real cause: PostgreSQL is gone, so a child killed with -9
    cannot be replaced (a new process needs its pools); after PROCESS_DEATHS_MAX
    deaths the parent stops the other child and the Redis it started, and exits 1."""
    pg = EmbeddedPostgres(serve_dir)
    server = serve(serve_dir, "--processes", "2",
                   env={"PROCESS_DEATHS_MAX": "3", "SHUTDOWN_TIMEOUT": "3"})
    try:
        until_sync(lambda: len(server.forks()) == 2, "two serving processes")
        children = [p.pid for p in server.forks()]
        redis_pid = EmbeddedRedis(serve_dir).pid
        pg.start()  # learns the port of the server's PostgreSQL
        pg.stop(even_if_reused=True)  # this test's own store, stopped under the server
        os.kill(children[0], signal.SIGKILL)
        assert server.proc.wait(60) == 1
        loops = [line for line in server.output if "crash loop" in line]
        assert len(loops) == 1, server.output[-20:]
        assert "3 server processes died within 60 s" in loops[0]
        # Each replacement said why it could not start.
        assert sum("error:" in line and "PostgreSQL" in line for line in server.output) >= 2
        assert not any(pid_alive(pid, "run.py") for pid in children)
        assert not pid_alive(redis_pid, "redis-server")
        assert _running_on(serve_dir) == []  # no child, replacement or store left
    finally:
        server.kill()
        EmbeddedRedis(serve_dir).stop(even_if_reused=True)
        pg.stop(even_if_reused=True)


def _running_on(data_dir: Path) -> list[str]:
    """Every process whose command line names ``data_dir`` (serve, its forks, stores)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = " ".join(proc.info["cmdline"] or ())
        if str(data_dir) in cmdline and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(cmdline)
    return found
