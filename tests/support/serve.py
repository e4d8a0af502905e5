"""``run.py serve`` in a subprocess, through the harness's launcher."""

from __future__ import annotations

import contextlib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from harness.server import ServeProcess
from server.embedded import EmbeddedPostgres, EmbeddedRedis

# Subprocess tests use a short lease, so that a killed process's chunks come back
# in seconds rather than the default 10 s.
SERVE_ENV = {"LOG_FORMAT": "text", "QUEUE_LEASE_S": "2", "SHUTDOWN_TIMEOUT": "10"}


def serve(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> ServeProcess:
    """``run.py serve`` on ``data_dir`` (give it a template copy first: ``copy_cluster``),
    with ``SERVE_ENV`` under ``env``."""
    return ServeProcess(data_dir, *args, env={**SERVE_ENV, **(env or {})})


def call(url: str, method: str, path: str, token: str | None, body: object = None
         ) -> tuple[int, Any]:
    """One blocking JSON call to a ``serve`` subprocess."""
    request = urllib.request.Request(
        url + path, method=method, data=orjson.dumps(body) if body is not None else None,
        headers={"Content-Type": "application/json",
                 **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, orjson.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, orjson.loads(err.read() or b"null")


def queue_state(url: str, token: str) -> dict:
    """The admin view of a ``serve`` subprocess's queue."""
    status, queue = call(url, "GET", "/v1/admin/queue", token)
    assert status == 200, queue
    return queue


@contextlib.contextmanager
def served(data_dir: Path, *args: str, env: dict[str, str] | None = None
           ) -> Iterator[ServeProcess]:
    """``serve(...)`` for the block; then, whatever happened, it is killed (forks
    first) and the stores it started on ``data_dir`` are stopped, by their pids (a
    killed ``serve`` leaves them running; after a clean stop they are gone already)."""
    server = serve(data_dir, *args, env=env)
    try:
        yield server
    finally:
        server.kill()
        EmbeddedRedis(data_dir).stop(even_if_reused=True)
        EmbeddedPostgres(data_dir).stop(even_if_reused=True)


def setup_competition(url: str, token: str) -> tuple[int, list[int]]:
    """One competition with five participants on a ``serve`` subprocess; their ids."""
    status, comp = call(url, "POST", "/v1/competitions", token, {"slug": "k", "name": "K"})
    assert status == 201, comp
    status, body = call(url, "POST", f"/v1/competitions/{comp['id']}/participants", token,
                        {"participants": [{"external_ref": str(i), "display_name": str(i)}
                                          for i in range(5)]})
    assert status == 201, body
    return comp["id"], [p["id"] for p in body["participants"]]


def send(url: str, token: str, cid: int, parts: list[int], tag: str, batches: int
         ) -> set[str]:
    """``batches`` requests of 300 points (ids ``tag-batch-i``) to a ``serve``
    subprocess, each on a new connection; the ids accepted."""
    accepted: set[str] = set()
    for number in range(batches):
        points = [{"id": f"{tag}-{number}-{i}", "competition_id": cid,
                   "participant_id": parts[i % 5], "value": 1} for i in range(300)]
        status, body = call(url, "POST", "/v1/points", token, {"points": points})
        assert status == 202, body
        accepted.update(body["ids"])
    return accepted


