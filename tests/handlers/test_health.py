from __future__ import annotations

from tests.support import Api


async def test_health_answers_ok_without_auth(api: Api) -> None:
    assert await api.get("/health", token=None) == (200, {"status": "ok"})


async def test_ready_reports_each_store_and_the_queue(api: Api) -> None:
    status, body = await api.get("/ready", token=None)
    assert status == 200
    assert body["status"] == "ready"
    checks = body["checks"]
    assert checks["postgres"]["ok"] and checks["redis"]["ok"]
    assert checks["postgres"]["pool"]["max"] == 5
    assert checks["queue"]["depth"] == 0
    assert checks["postgres"]["latency_ms"] >= 0


async def test_health_turns_draining_on_shutdown(api: Api, service) -> None:
    service.deps.serving.draining = True
    assert await api.get("/health", token=None) == (503, {"status": "draining"})
    service.deps.serving.draining = False
