"""Real embedded PostgreSQL and Redis for the whole session; a clean slate per test.

No fakes: the stores are the same binaries ``serve`` uses, started once on free
ports in a private temporary directory and stopped (by pid) at the end.  Each
test gets empty tables and an empty Redis database.  Async tests run on a fresh
uvloop-backed tornado IOLoop (pytest-tornasync's runner, our ``io_loop``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg2
import pytest
import redis
import tornado.httpclient
import tornado.ioloop
import uvloop
from tornado.platform.asyncio import AsyncIOLoop

from server.auth import hash_token
from server.config import Settings
from server.embedded import EmbeddedPostgres, EmbeddedRedis
from server.lifecycle import Service, running_service
from server.storage.migrate import apply_migrations

TABLES = "points, standing_deltas, standings, participants, competitions, api_tokens"
TOKENS = {role: f"pts_test_{role}_token" for role in ("read", "ingest", "admin", "revoked")}


@dataclass
class Stores:
    postgres: EmbeddedPostgres
    redis: EmbeddedRedis

    @property
    def database_url(self) -> str:
        return self.postgres.url

    @property
    def redis_url(self) -> str:
        return self.redis.url


@pytest.fixture(scope="session")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stores]:
    data_dir = tmp_path_factory.mktemp("stores")
    pg, rd = EmbeddedPostgres(data_dir), EmbeddedRedis(data_dir)
    pg.start()
    try:
        rd.start()
        loop = uvloop.new_event_loop()
        try:
            loop.run_until_complete(apply_migrations(pg.url))
        finally:
            loop.close()
        yield Stores(pg, rd)
    finally:
        rd.stop()
        pg.stop()


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


@pytest.fixture(params=["naive", "pipelined"])
def ingest_path(request: pytest.FixtureRequest) -> str:
    """Run a test over both ingest paths: they must behave identically."""
    return request.param


@pytest.fixture
def settings() -> Settings:
    """Override in a module to change the service's settings."""
    return make_settings()


@pytest.fixture
def service(clean: Stores, settings: Settings, io_loop: tornado.ioloop.IOLoop
            ) -> Iterator[Service]:
    """The whole service in this test's loop; workers off unless settings say so."""
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


def sql(stores: Stores, query: str, *args: Any) -> list[tuple]:
    """Run one query against the test database (for asserting exact counts)."""
    conn = psycopg2.connect(stores.database_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(query, args or None)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()
