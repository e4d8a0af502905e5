"""Real embedded PostgreSQL and Redis for the whole session; a clean slate per test.

No fakes: the stores are the same binaries ``serve`` uses, started once on free
ports in a private temporary directory and stopped (by pid) at the end.  Each
test gets empty tables and an empty Redis database.  Async tests run on a fresh
uvloop-backed tornado IOLoop (pytest-tornasync's runner, our ``io_loop``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg2
import pytest
import redis
import tornado.httpclient
import tornado.ioloop
import uvloop
from tornado.platform.asyncio import AsyncIOLoop

from server.access.auth import hash_token
from server.config import INGEST_PATHS, Settings
from server.runtime.lifecycle import Service, running_service
from server.runtime.prepare import Stores, stores_ready

TABLES = "points, standing_deltas, standings, participants, competitions, api_tokens"
TOKENS = {role: f"pts_test_{role}_token" for role in ("read", "ingest", "admin", "revoked")}


@pytest.fixture(scope="session")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stores]:
    """The session's stores: started and migrated the way ``serve`` does it."""
    with stores_ready(Settings(data_dir=tmp_path_factory.mktemp("stores"))) as ready:
        yield ready


@pytest.fixture
def clean(stores: Stores) -> Iterator[Stores]:
    """Empty tables and Redis, plus the four test tokens."""
    with psycopg2.connect(stores.database_url) as conn, conn.cursor() as cur:
        cur.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
        for role, token in TOKENS.items():
            cur.execute(
                "INSERT INTO api_tokens (token_hash, role, name, revoked_at) VALUES "
                "(%s, %s, %s, CASE WHEN %s THEN now() END)",
                (hash_token(token), "admin" if role == "revoked" else role, role,
                 role == "revoked"),
            )
    conn.close()
    client = redis.Redis.from_url(stores.redis_url)
    client.flushdb()
    client.close()
    yield stores


@pytest.fixture
def io_loop() -> Iterator[tornado.ioloop.IOLoop]:
    """A fresh uvloop-backed IOLoop per test (replaces pytest-tornasync's)."""
    aloop = uvloop.new_event_loop()
    loop = AsyncIOLoop(asyncio_loop=aloop)
    asyncio.set_event_loop(aloop)
    yield loop
    # Finish what the test left (cancelled tasks, the resolver's executor) so that
    # closing the loop cannot block.
    pending = asyncio.all_tasks(aloop)
    for task in pending:
        task.cancel()
    aloop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    aloop.run_until_complete(aloop.shutdown_asyncgens())
    aloop.run_until_complete(aloop.shutdown_default_executor())
    loop.close()


def make_settings(**overrides: Any) -> Settings:
    base = {"port": 0, "queue_workers": 0, "pg_pool_min": 1, "pg_pool_max": 5,
            "queue_lease_s": 30.0, "shutdown_timeout_s": 5.0, "ack_timeout_s": 2.0}
    base.update(overrides)
    return Settings(**base)


@pytest.fixture(params=INGEST_PATHS)
def ingest_path(request: pytest.FixtureRequest) -> str:
    """Every test of the service runs over both ingest paths: they must behave alike."""
    return request.param


@pytest.fixture
def settings(request: pytest.FixtureRequest, ingest_path: str) -> Settings:
    """The service's settings.  A test changes some with
    ``@pytest.mark.parametrize("settings", [{...}], indirect=True)``; a module
    overrides the fixture (keeping ``ingest_path`` unless its behaviour cannot
    depend on the path)."""
    return make_settings(ingest_path=ingest_path, **getattr(request, "param", {}))


@pytest.fixture
def service(clean: Stores, settings: Settings, io_loop: tornado.ioloop.IOLoop
            ) -> Iterator[Service]:
    """The whole service in this test's loop; workers off unless settings say so."""
    assert clean.redis_url is not None
    context = running_service(settings, clean.database_url, clean.redis_url)
    svc = io_loop.run_sync(context.__aenter__)
    yield svc
    io_loop.run_sync(lambda: context.__aexit__(None, None, None))


class Api:
    """A small JSON client for the service under test."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = tornado.httpclient.AsyncHTTPClient(force_instance=True)

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
            raise response.error  # type: ignore[misc]
        data = orjson.loads(response.body) if response.body else None
        return response.code, data

    async def get(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, json: Any = None, **kwargs: Any) -> tuple[int, Any]:
        return await self.request("POST", path, json=json, **kwargs)


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
            api.http.close()


@pytest.fixture
def api(service: Service) -> Iterator[Api]:
    client = Api(service.url)
    yield client
    client.http.close()


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


def sql(stores: Stores | str, query: str, *args: Any) -> list[tuple]:
    """Run one query against the test database (``Stores`` or a URL) for exact counts."""
    conn = psycopg2.connect(stores if isinstance(stores, str) else stores.database_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(query, args or None)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


@pytest.fixture
def own(tmp_path: Path) -> Iterator[Stores]:
    """This test's own PostgreSQL and Redis, to stop, kill and restart at will."""
    with stores_ready(Settings(data_dir=tmp_path)) as stores:
        sql(stores, "INSERT INTO api_tokens (token_hash, role, name) "
                    "VALUES (%s, 'admin', 'a')", hash_token(TOKENS["admin"]))
        yield stores


async def drained(service: Service, expected: int, stores: Stores, timeout_s: float = 60
                  ) -> None:
    """Wait (bounded) until the queue is empty and ``expected`` points are committed."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        try:
            stats = await service.deps.queue.stats()
            count = sql(stores, "SELECT count(*) FROM points")[0][0]
            unfolded = sql(stores, "SELECT count(*) FROM standing_deltas")[0][0]
        except Exception:  # a store may still be coming back
            count, stats, unfolded = -1, {}, -1
        if (count == expected and stats.get("depth") == 0 and stats.get("inflight") == 0
                and unfolded == 0):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not drained: {count} committed of {expected}, {stats}")


def batch(cid: int, parts: list[int], tag: str, n: int = 100) -> dict:
    return {"points": [{"id": f"{tag}-{i}", "competition_id": cid,
                        "participant_id": parts[i % len(parts)], "value": 1}
                       for i in range(n)]}
