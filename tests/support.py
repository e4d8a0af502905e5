"""What the tests share: waits that fail loudly, a JSON client, store helpers, ``serve``.

Test modules import from here (and get fixtures from ``conftest.py``); no test
module imports another.

* **Waits.**  ``until`` (async) and ``until_sync`` (blocking, for tests that
  drive a subprocess) poll a predicate and raise ``AssertionError`` naming what
  they waited for, and the last value seen, when the time runs out.  A sleep is
  never a sync point.
* **Stores.**  ``sql`` runs one query for exact counts; ``locked`` holds tables
  in ACCESS EXCLUSIVE mode from a connection of its own (a slow or stuck
  PostgreSQL, on demand) and ``lock_waiters`` counts the sessions it holds up,
  ``running`` shows their statements (parameters inline);
  ``register`` writes a competition straight through a ``Database`` (storage
  tests); ``assert_exact`` is the exactly-once check, per
  participant; ``copy_cluster`` gives a test a PostgreSQL cluster copied from the
  session's template (``initdb`` and migrations once per session).
* **The service.**  ``Api`` (a small JSON client), ``seed``, ``batch``,
  ``drained``, ``assert_settled_cleanly`` (nothing retried or dead-lettered),
  ``plant_chunk`` (a chunk no producer of ours writes); ``serve``
  starts ``run.py serve`` with the harness's launcher (``harness.server.ServeProcess``)
  on a data directory holding a template copy, with short leases; ``served`` is
  ``serve`` for a block (killed and its stores stopped after it), ``call`` one
  JSON call to it, ``setup_competition`` and ``send`` its competition and points.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import orjson
import psycopg2
import pytest
import tornado.httpclient

from harness.server import ROOT, ServeProcess
from server.config import INGEST_PATHS, Settings
from server.embedded import EmbeddedPostgres, EmbeddedRedis
from server.queue import keys
from server.runtime.lifecycle import Service, running_service
from server.runtime.prepare import Stores
from server.storage import catalog
from server.storage.database import Database

T = TypeVar("T")

__all__ = ["ROOT"]

TOKENS = {role: f"pts_test_{role}_token" for role in ("read", "ingest", "admin", "revoked")}
# The tests whose behaviour depends on the ingest path run on both (the default
# ``ingest_path`` fixture is pipelined): ``@BOTH_PATHS`` on a test, or
# ``pytestmark = BOTH_PATHS`` on a module.
BOTH_PATHS = pytest.mark.parametrize("ingest_path", INGEST_PATHS)


# --- waits --------------------------------------------------------------------


def _failed(what: str, timeout_s: float, last: object) -> AssertionError:
    return AssertionError(f"timed out after {timeout_s:g}s waiting for {what} "
                          f"(last seen: {last!r})")


async def until(predicate: Callable[[], T | Awaitable[T]], what: str,
                timeout_s: float = 10.0, interval_s: float = 0.01) -> T:
    """Poll ``predicate`` (sync or async) until it returns something truthy; return it.

    Raises ``AssertionError`` naming ``what`` and the last value when ``timeout_s``
    passes first.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            raise _failed(what, timeout_s, value)
        await asyncio.sleep(interval_s)


def until_sync(predicate: Callable[[], T], what: str, timeout_s: float = 30.0,
               interval_s: float = 0.05) -> T:
    """``until`` for a test that blocks (one driving a subprocess): same contract."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise _failed(what, timeout_s, value)
        time.sleep(interval_s)


# --- stores ---------------------------------------------------------------------


def sql(stores: Stores | str, query: str, *args: Any) -> list[tuple]:
    """Run one query against a test database (``Stores`` or a URL) for exact counts."""
    conn = psycopg2.connect(stores if isinstance(stores, str) else stores.database_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(query, args or None)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


@contextlib.contextmanager
def locked(stores: Stores | str, *tables: str) -> Iterator[None]:
    """Hold ``tables`` in ACCESS EXCLUSIVE mode from a connection of its own for the
    block: every statement that touches them waits (a PostgreSQL that is slow, or stuck)."""
    conn = psycopg2.connect(stores if isinstance(stores, str) else stores.database_url)
    try:
        with conn.cursor() as cur:
            cur.execute(f"LOCK TABLE {', '.join(tables)} IN ACCESS EXCLUSIVE MODE")
        yield
    finally:
        conn.rollback()
        conn.close()


def lock_waiters(stores: Stores | str) -> int:
    """How many sessions wait for a lock now (a statement held up by ``locked``, say):
    the sync point for "the write has reached PostgreSQL and waits there"."""
    return sql(stores, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
               )[0][0]


def running(stores: Stores | str, text: str) -> list[str]:
    """The statements PostgreSQL is running now whose text holds ``text`` (those a
    ``locked`` table holds up, say).  psycopg2 sends parameters inline, so the text
    shows them: which ids a poll asks about, which competition a read is for."""
    return [query for (query,) in sql(
        stores, "SELECT query FROM pg_stat_activity WHERE state = 'active' "
                "AND pid <> pg_backend_pid() AND strpos(query, %s) > 0", text)]


async def register(db: Database, participants: int = 3, slug: str = "cup"
                   ) -> tuple[int, list[int]]:
    """A competition with ``participants`` participants, written through ``db`` (storage
    tests, which have no API); (competition id, their ids)."""
    async with db.transaction() as cur:
        comp = await catalog.create_competition(cur, slug, slug.title(), None, None)
        rows = await catalog.upsert_participants(
            cur, comp["id"], [(f"p{i}", f"Player {i}") for i in range(participants)])
    return comp["id"], [row["id"] for row in rows]


def assert_exact(stores: Stores | str, accepted: set[str]) -> None:
    """Every accepted id is committed exactly once, nothing else is, and each
    participant's standing equals what its committed points add up to.

    Per participant, not a global sum: one delta applied twice and another lost
    would cancel out in a sum.  Standings must be folded (no pending deltas).
    """
    ids = [row[0] for row in sql(stores, "SELECT id FROM points")]
    assert len(ids) == len(set(ids)), "a point was stored twice"
    missing, extra = accepted - set(ids), set(ids) - accepted
    assert not missing and not extra, (f"{len(missing)} accepted but not committed, "
                                       f"{len(extra)} committed but never accepted")
    assert sql(stores, "SELECT count(*) FROM standing_deltas") == [(0,)], "unfolded deltas"
    expected = sql(stores, "SELECT competition_id, participant_id, round(sum(value)::numeric, 6),"
                           " count(*), max(recorded_at) FROM points GROUP BY 1, 2 ORDER BY 1, 2")
    actual = sql(stores, "SELECT competition_id, participant_id, round(total::numeric, 6),"
                         " points, last_point_at FROM standings ORDER BY 1, 2")
    assert actual == expected


def copy_cluster(template: Path, data_dir: Path) -> None:
    """Give ``data_dir`` a PostgreSQL cluster copied from ``template`` (a stopped,
    migrated cluster), owner and modes kept: no ``initdb``, no migrations."""
    data_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", str(template), str(data_dir / "postgres")], check=True,
                   timeout=60)


# --- the service in this process ------------------------------------------------


def make_settings(**overrides: Any) -> Settings:
    base = {"port": 0, "queue_workers": 0, "pg_pool_min": 1, "pg_pool_max": 5,
            "queue_lease_s": 30.0, "shutdown_timeout_s": 5.0, "ack_timeout_s": 2.0}
    base.update(overrides)
    return Settings(**base)  # type: ignore[arg-type]


class Api:
    """A small JSON client for the service under test."""

    def __init__(self, base_url: str, max_clients: int = 10) -> None:
        self.base_url = base_url
        self.http = tornado.httpclient.AsyncHTTPClient(force_instance=True,
                                                       max_clients=max_clients)

    async def request(self, method: str, path: str, *, token: str | None = "admin",
                      json: Any = None, body: bytes | None = None,
                      content_type: str | None = None,
                      headers: dict[str, str] | None = None,
                      **kwargs: Any) -> tuple[int, Any]:
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {TOKENS.get(token, token)}"
        if json is not None:
            body = orjson.dumps(json)
            content_type = content_type or "application/json"
        if content_type:
            all_headers["Content-Type"] = content_type
        if body is None and method in ("POST", "PUT", "PATCH") and "body_producer" not in kwargs:
            body = b""
        response = await self.http.fetch(
            self.base_url + path, method=method, body=body, headers=all_headers,
            raise_error=False, request_timeout=120,
            allow_nonstandard_methods=method == "DELETE", **kwargs)
        if response.code == 599:
            assert response.error is not None
            raise response.error
        data = orjson.loads(response.body) if response.body else None
        return response.code, data

    async def get(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, json: Any = None, **kwargs: Any) -> tuple[int, Any]:
        return await self.request("POST", path, json=json, **kwargs)

    def close(self) -> None:
        self.http.close()


@contextlib.asynccontextmanager
async def serving(settings: Settings, database_url: str, redis_url: str | None
                  ) -> AsyncIterator[tuple[Service, Api]]:
    """The whole service on stores a test owns (and may stop), with a client; for
    tests whose settings or stores the ``service`` fixture does not give."""
    assert redis_url is not None
    async with running_service(settings, database_url, redis_url) as service:
        api = Api(service.url)
        try:
            yield service, api
        finally:
            api.close()


async def seed(api: Api, participants: int = 3) -> tuple[int, list[int]]:
    """One competition with ``participants`` participants; returns their ids."""
    status, comp = await api.post("/v1/competitions", {"slug": "cup", "name": "The Cup"})
    assert status == 201, comp
    status, body = await api.post(
        f"/v1/competitions/{comp['id']}/participants",
        {"participants": [{"external_ref": f"p{i}", "display_name": f"Player {i}"}
                          for i in range(participants)]})
    assert status == 201, body
    return comp["id"], [p["id"] for p in body["participants"]]


def batch(cid: int, parts: list[int], tag: str, n: int = 100) -> dict:
    return {"points": [{"id": f"{tag}-{i}", "competition_id": cid,
                        "participant_id": parts[i % len(parts)], "value": 1}
                       for i in range(n)]}


async def assert_settled_cleanly(service: Service) -> None:
    """Nothing was retried, waits to be, or went to the dead letters: a resent copy of a
    committed point must settle like any other (its insert takes nothing)."""
    stats = await service.deps.queue.stats()
    assert (stats["retry_scheduled"], stats["dead"], stats["totals"]["retried"],
            stats["totals"]["dead_lettered"]) == (0, 0, 0, 0), stats


async def drained(service: Service, expected: int, stores: Stores, timeout_s: float = 60
                  ) -> None:
    """Wait (bounded) until the queue is empty, ``expected`` points are committed and
    every standings delta is folded."""

    async def state() -> tuple[int, int, int, int] | None:
        try:
            stats = await service.deps.queue.stats()
            count = sql(stores, "SELECT count(*) FROM points")[0][0]
            unfolded = sql(stores, "SELECT count(*) FROM standing_deltas")[0][0]
        except Exception:  # a store may still be coming back
            return None
        return count, stats["depth"], stats["inflight"], unfolded

    async def done() -> bool:
        return await state() == (expected, 0, 0, 0)

    try:
        await until(done, f"{expected} points committed and the queue empty", timeout_s,
                    interval_s=0.05)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; (committed, depth, inflight, unfolded) = "
                             f"{await state()}") from None


async def plant_chunk(service: Service, payload: bytes,
                      chunk_id: str = "00000000000000000000000000000000-1") -> None:
    """Put a chunk in the queue as a buggy (or older) producer might have."""
    redis = service.deps.redis
    await redis.hset(keys.ITEMS, chunk_id, payload)
    await redis.rpush(keys.READY, chunk_id)
    await redis.hincrby(keys.STATS, "ready", 1)


# --- run.py serve ---------------------------------------------------------------

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


def conformance_checks() -> list[Any]:
    """schemathesis's checks that an answer is the one the document describes: status,
    content type, body, headers (imported here, on use: schemathesis is slow to import)."""
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    return [status_code_conformance, content_type_conformance, response_schema_conformance,
            response_headers_conformance]
