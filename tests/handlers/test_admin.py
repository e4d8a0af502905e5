"""Admin: queue pause/resume, dead-letter listing, requeue, purge and trimming."""

from __future__ import annotations

import pytest

from server.runtime.lifecycle import Service
from server.runtime.prepare import Stores
from tests.support import Api, batch, make_settings, seed, seed_every_shard, sql, until


@pytest.fixture
def settings(request: pytest.FixtureRequest, ingest_path: str):
    return make_settings(ingest_path=ingest_path, queue_max_attempts=2, retry_base_s=0.001,
                         retry_max_s=0.002, dlq_max_entries=5,
                         **getattr(request, "param", {}))


async def drain_until(service: Service, dead: int) -> None:
    """Drain (each pass may leave a failed point waiting out its retry delay) until
    ``dead`` points are in the dead-letter queue."""

    async def reached() -> bool:
        await service.deps.workers.drain()
        return (await service.deps.queue.stats())["dead"] == dead

    await until(reached, f"{dead} dead letter(s)")


async def test_dead_letter_can_be_inspected_requeued_and_purged(
        api: Api, service: Service, clean: Stores) -> None:
    cid, _ = await seed(api)
    status, _ = await api.post("/v1/points", {
        "id": "ghost", "competition_id": cid, "participant_id": 999, "value": 4})
    assert status == 202
    await drain_until(service, dead=1)

    status, page = await api.get("/v1/admin/dlq")
    assert status == 200 and page["next_cursor"] is None
    (item,) = page["items"]
    assert item["point"]["id"] == "ghost" and item["point"]["participant_id"] == 999
    assert item["key"] == f"{cid}:ghost"  # ids are scoped per competition: so is the key
    assert (item["reason"], item["attempts"]) == ("unknown_participant", 2)
    assert item["first_failed_at"] <= item["last_failed_at"]
    assert "999" in item["last_error"]

    # Requeued, it fails its attempts again and comes back to the DLQ.
    assert await api.post("/v1/admin/dlq/requeue", {"ids": [item["key"], "nope"]}) == (
        200, {"requeued": 1, "refused_queue_full": 0, "not_requeueable": 0})
    assert (await service.deps.queue.stats())["dead"] == 0
    await drain_until(service, dead=1)
    assert (await api.get("/v1/admin/dlq"))[1]["items"][0]["attempts"] == 2

    status, body = await api.request("DELETE", "/v1/admin/dlq", json={"all": True})
    assert (status, body) == (200, {"purged": 1})
    assert (await api.get("/v1/admin/dlq"))[1]["items"] == []
    assert sql(clean, "SELECT count(*) FROM points") == [(0,)]


async def test_requeued_point_commits_once_its_participant_exists(
        api: Api, service: Service, clean: Stores) -> None:
    cid, parts = await seed(api, participants=1)
    await api.post("/v1/points", {"id": "late", "competition_id": cid,
                                  "participant_id": parts[0] + 1, "value": 3})
    await drain_until(service, dead=1)
    await api.post(f"/v1/competitions/{cid}/participants",
                   {"participants": [{"external_ref": "late", "display_name": "Late"}]})
    assert (await api.post("/v1/admin/dlq/requeue", {"all": True}))[1]["requeued"] == 1
    await service.deps.workers.drain()
    assert sql(clean, "SELECT id, value FROM points") == [("late", 3.0)]


async def test_dead_letter_queue_keeps_its_bound(api: Api, service: Service) -> None:
    cid, _ = await seed(api)
    await api.post("/v1/points", {"points": [
        {"id": f"g{i}", "competition_id": cid, "participant_id": 999, "value": 1}
        for i in range(8)]})
    await drain_until(service, dead=5)
    _, page = await api.get("/v1/admin/dlq?limit=2")
    assert len(page["items"]) == 2 and page["next_cursor"] == "2"
    _, rest = await api.get(f"/v1/admin/dlq?limit=10&cursor={page['next_cursor']}")
    assert len(rest["items"]) == 3
    _, queue = await api.get("/v1/admin/queue")
    assert queue["dead"] == 5 and queue["throughput"]["dead_lettered"] == 8
    assert queue["throughput"]["dlq_dropped"] == 3  # what the bound dropped is counted


@pytest.mark.parametrize("body", [{}, {"ids": []}, {"ids": [1]}, {"all": False},
                                  {"ids": ["a"], "all": True}])
async def test_bad_dlq_selection_is_422(api: Api, body: dict) -> None:
    assert (await api.post("/v1/admin/dlq/requeue", body))[0] == 422
    assert (await api.request("DELETE", "/v1/admin/dlq", json=body))[0] == 422


async def test_pause_stops_claiming_while_ingest_keeps_accepting(
        api: Api, service: Service, clean: Stores) -> None:
    cid, parts = await seed(api)
    assert await api.post("/v1/admin/queue/pause") == (200, {"paused": True})
    status, _ = await api.post("/v1/points", {"competition_id": cid,
                                              "participant_id": parts[0], "value": 1})
    assert status == 202
    assert await service.deps.workers.drain() == 0
    _, queue = await api.get("/v1/admin/queue")
    assert queue["paused"] is True and queue["depth"] == 1
    assert await api.post("/v1/admin/queue/resume") == (200, {"paused": False})
    assert await service.deps.workers.drain() == 1


async def test_admin_endpoints_need_the_admin_role(api: Api) -> None:
    for method, path in (("GET", "/v1/admin/dlq"), ("POST", "/v1/admin/queue/pause"),
                         ("POST", "/v1/admin/dlq/requeue")):
        status, _ = await api.request(method, path, token="ingest",
                                      json={"all": True} if method == "POST" else None)
        assert status == 403


@pytest.mark.parametrize("settings", [{"queue_shards": 3}], indirect=True)
async def test_the_queue_view_sums_the_shards_and_pause_holds_every_shard(
        api: Api, service: Service, clean: Stores) -> None:
    shards = await seed_every_shard(api, 3)
    for cid, parts in shards.values():
        status, _ = await api.post("/v1/points", batch(cid, parts, f"{cid}", cid % 5 + 1))
        assert status == 202
    total = sum(cid % 5 + 1 for cid, _ in shards.values())
    assert await api.post("/v1/admin/queue/pause") == (200, {"paused": True})
    assert await service.deps.workers.drain() == 0  # no shard is claimed from
    _, queue = await api.get("/v1/admin/queue")
    assert (queue["depth"], queue["throughput"]["enqueued"]) == (total, total)
    assert await api.post("/v1/admin/queue/resume") == (200, {"paused": False})
    assert await service.deps.workers.drain() == total
    assert sql(clean, "SELECT count(*) FROM points") == [(total,)]
