"""Fixtures: real embedded PostgreSQL and Redis for the session, a clean slate per test.

No fakes: the stores are the same binaries ``serve`` uses, started once on free
ports in a private temporary directory and stopped (by pid) at the end.  Each
test gets empty tables and an empty Redis database.  A test that stops, kills or
restarts a store gets its own (``own``), on a PostgreSQL cluster copied from the
session's template: ``initdb`` and the migrations run once per session.  Async
tests run on a fresh uvloop-backed tornado IOLoop (pytest-tornasync's runner,
our ``io_loop``).  Helpers live in ``tests/support.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
import redis
import tornado.ioloop
import uvloop
from tornado.platform.asyncio import AsyncIOLoop

from server.access.auth import hash_token
from server.config import PIPELINED, Settings
from server.runtime.lifecycle import Service, running_service
from server.runtime.prepare import Stores, stores_ready
from tests.support import TOKENS, Api, copy_cluster, make_settings, sql
from tests.support.sentinel import SentinelGroup

TABLES = "points, standing_deltas, standings, participants, competitions, api_tokens"


@pytest.fixture(scope="session")
def stores(tmp_path_factory: pytest.TempPathFactory, pg_template: Path) -> Iterator[Stores]:
    """The session's stores: started the way ``serve`` does it, on a template copy, but
    without waiting for the disk on every write (Redis fsyncs once a second, PostgreSQL
    commits without waiting for its WAL flush).  Nothing here survives a crash of the
    host, which no test stages; what is durable by default is tested on stores of
    the tests' own (``test_durability.py``, ``test_serve.py``)."""
    data_dir = tmp_path_factory.mktemp("stores")
    copy_cluster(pg_template, data_dir)
    with stores_ready(Settings(data_dir=data_dir, queue_fsync="everysec")) as ready:
        conn = psycopg2.connect(ready.database_url)
        conn.autocommit = True  # ALTER SYSTEM runs outside a transaction
        with conn.cursor() as cur:
            cur.execute("ALTER SYSTEM SET synchronous_commit = off")
            cur.execute("SELECT pg_reload_conf()")
        conn.close()
        yield ready


@pytest.fixture(scope="session")
def pg_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stopped PostgreSQL cluster, initialised and migrated once, to copy from."""
    data_dir = tmp_path_factory.mktemp("template")
    with stores_ready(Settings(data_dir=data_dir), redis=False):
        pass  # started (initdb), migrated, and stopped cleanly on the way out
    return data_dir / "postgres"


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


@pytest.fixture
def ingest_path() -> str:
    """Pipelined; a test whose behaviour depends on the path runs on both
    (``tests.support.BOTH_PATHS`` parametrizes this)."""
    return PIPELINED


@pytest.fixture
def settings(request: pytest.FixtureRequest, ingest_path: str) -> Settings:
    """The service's settings.  A test changes some with
    ``@pytest.mark.parametrize("settings", [{...}], indirect=True)``; a module
    overrides the fixture."""
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


@pytest.fixture
def api(service: Service) -> Iterator[Api]:
    client = Api(service.url)
    yield client
    client.close()


@pytest.fixture
def own(tmp_path: Path, pg_template: Path) -> Iterator[Stores]:
    """This test's own PostgreSQL and Redis, to stop, kill and restart at will."""
    copy_cluster(pg_template, tmp_path)
    with stores_ready(Settings(data_dir=tmp_path)) as stores:
        sql(stores, "INSERT INTO api_tokens (token_hash, role, name) "
                    "VALUES (%s, 'admin', 'a')", hash_token(TOKENS["admin"]))
        yield stores


@pytest.fixture
def serve_dir(tmp_path: Path, pg_template: Path) -> Path:
    """A data directory for ``run.py serve`` holding a copy of the template cluster."""
    data_dir = tmp_path / "data"
    copy_cluster(pg_template, data_dir)
    return data_dir


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelGroup]:
    """A Redis primary and its replica under three sentinels, this test's own."""
    group = SentinelGroup(tmp_path / "sentinel-group")
    yield group
    group.stop()


@pytest.fixture
def replicated(tmp_path: Path) -> Iterator[SentinelGroup]:
    """A Redis primary and its replica, no sentinels (``WAIT`` has a replica to count)."""
    group = SentinelGroup(tmp_path / "replicated", sentinels=0)
    yield group
    group.stop()
