"""The embedded PostgreSQL: stopped by whoever asks for its data directory."""

from __future__ import annotations

from pathlib import Path

import psutil

from server.embedded import EmbeddedPostgres
from tests.support import copy_cluster, until_sync


def test_a_server_another_object_started_is_stopped_by_a_fresh_one(
        tmp_path: Path, pg_template: Path) -> None:
    # A restarted `serve`, `served()` after a kill -9, `run.py stores stop`: the
    # object asked to stop did not start the server (and, as root, has not learnt
    # which user it runs as: pg_ctl refuses to run as root).
    copy_cluster(pg_template, tmp_path)
    starter = EmbeddedPostgres(tmp_path)
    starter.start()
    pid = starter.pid
    assert pid is not None and psutil.pid_exists(pid)
    try:
        EmbeddedPostgres(tmp_path).stop(even_if_reused=True)
        until_sync(lambda: not psutil.pid_exists(pid), "the postmaster stopped", timeout_s=30)
        assert EmbeddedPostgres(tmp_path).pid is None
    finally:
        starter.stop(even_if_reused=True)
