from __future__ import annotations

import asyncio
import logging
import re

import pytest

from server.runtime.prepare import Stores
from tests.support import Api, batch, make_settings, seed, serving

# What no public answer may hold: an address, a port, a driver's words.
_LEAKS = re.compile(r"\d+\.\d+\.\d+\.\d+|localhost|port|refused|Error \d+|connect|"
                    r"server at|psycopg|redis\.exceptions", re.IGNORECASE)


async def test_health_answers_ok_without_auth(api: Api) -> None:
    assert await api.get("/health", token=None) == (200, {"status": "ok"})


async def test_ready_tells_everyone_its_status_and_an_admin_each_check(api: Api) -> None:
    for token in (None, "read", "ingest", "pts_not_a_token"):
        assert await api.get("/ready", token=token) == (200, {"status": "ready",
                                                              "failed": []})
    status, body = await api.get("/ready")  # admin
    assert status == 200
    assert (body["status"], body["failed"]) == ("ready", [])
    checks = body["checks"]
    assert checks["postgres"]["ok"] and checks["redis"]["ok"]
    assert checks["postgres"]["pool"]["max"] == 5
    assert checks["queue"]["depth"] == 0
    assert checks["postgres"]["latency_ms"] >= 0


async def test_health_turns_draining_on_shutdown(api: Api, service) -> None:
    service.deps.serving.draining = True
    assert await api.get("/health", token=None) == (503, {"status": "draining"})
    service.deps.serving.draining = False


async def test_with_the_stores_down_public_answers_name_no_address_and_no_driver_text(
        own: Stores, caplog: pytest.LogCaptureFixture) -> None:
    """/ready without an admin token and every 503 body carry a status and a generic
    message; the drivers' text (hosts, ports, errnos) reaches the admin's /ready and
    the log only."""
    assert own.postgres is not None and own.redis is not None
    ports = (str(own.postgres.port), str(own.redis.port))
    async with serving(make_settings(), own.database_url, own.redis_url) as (service, api):
        cid, parts = await seed(api)  # the admin token is now verified (and cached)
        service.deps.readiness.cache_s = 0  # asked afresh
        own.redis.kill()
        status, body = await api.get("/v1/admin/queue")
        assert status == 503, body
        assert body["error"]["message"] == "Redis is unavailable"
        await asyncio.to_thread(own.postgres.stop, even_if_reused=True)
        with caplog.at_level(logging.WARNING):
            answers = [await api.get("/v1/competitions"),
                       await api.get(f"/v1/competitions/{cid}/leaderboard"),
                       await api.get("/v1/admin/queue"),
                       await api.post("/v1/points", batch(cid, parts, "lost", 2))]
        for status, body in answers:
            assert status == 503, body
            text = str(body)
            assert not _LEAKS.search(text) and not any(p in text for p in ports), body
        assert answers[0][1]["error"]["message"] == "PostgreSQL is unavailable"
        logged = " ".join(r.getMessage() for r in caplog.records)
        assert f"127.0.0.1:{own.redis.port}" in logged  # the driver's words, in the log

        for token in (None, "read", "ingest"):
            status, body = await api.get("/ready", token=token)
            assert (status, body) == (503, {"status": "unavailable",
                                             "failed": ["postgres", "redis", "queue"]})
        status, body = await api.get("/ready")  # admin (verified before the outage)
        assert (status, body["failed"]) == (503, ["postgres", "redis", "queue"])
        checks = body["checks"]
        assert own.redis.port is not None and str(own.redis.port) in checks["redis"]["error"]
        assert "error" in checks["postgres"] and checks["redis"]["circuit"]
        assert "durability" not in checks["redis"]  # not read: Redis is down
